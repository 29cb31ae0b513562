package raftstore

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// MaxCommandSize bounds an encoded command (hashicorp/raft suggests entries
// well under 512 KiB so heartbeats are not delayed).
const MaxCommandSize = 256 << 10

// newCommand returns a zero command of type t, or nil if t is unknown.
func newCommand(t CommandType) Command {
	switch t {
	case CmdBootstrap:
		return &Bootstrap{}
	case CmdSetConfig:
		return &SetConfig{}
	case CmdInitialize:
		return &Initialize{}
	case CmdRegisterMember:
		return &RegisterMember{}
	case CmdReportStatus:
		return &ReportStatus{}
	case CmdRemoveMember:
		return &RemoveMember{}
	case CmdSetLeader:
		return &SetLeader{}
	case CmdRenewLeader:
		return &RenewLeader{}
	case CmdSetSync:
		return &SetSync{}
	case CmdSetFailover:
		return &SetFailover{}
	case CmdSetPause:
		return &SetPause{}
	case CmdBarrier:
		return &Barrier{}
	}
	return nil
}

// Encode validates cmd and returns its wire form: the type byte, then JSON.
// Proposers call it (Store.Apply, api.Client), so a command that fails
// today's rules never reaches the log.
func Encode(cmd Command) ([]byte, error) {
	if cmd == nil {
		return nil, invalid("nil command")
	}
	if err := cmd.Validate(); err != nil {
		return nil, err
	}
	return encode(cmd)
}

// encode is Encode without validation.
func encode(cmd Command) ([]byte, error) {
	body, err := json.Marshal(cmd)
	if err != nil {
		return nil, fmt.Errorf("encode command type %d: %w", cmd.Type(), err)
	}
	out := make([]byte, 0, len(body)+1)
	out = append(out, byte(cmd.Type()))
	out = append(out, body...)
	if len(out) > MaxCommandSize {
		return nil, invalid("encoded command type %d is %d bytes, over %d", cmd.Type(), len(out), MaxCommandSize)
	}
	return out, nil
}

// Decode parses and validates a wire-form command that came from the
// network (POST /raft/apply). It never panics: bad input yields an error
// wrapping ErrInvalidCommand or ErrUnknownCommand. The command returned is
// a value (not a pointer), as Encode takes it.
func Decode(b []byte) (Command, error) {
	cmd, err := decodeEntry(b)
	if err != nil {
		return nil, err
	}
	if err := cmd.Validate(); err != nil {
		return nil, err
	}
	return cmd, nil
}

// decodeEntry parses a command as strictly as Decode (known type, known
// fields, no trailing data) but does not validate it. The FSM decodes
// committed entries with it: validation rules are code that changes between
// releases, a committed entry is data every release must apply the same way.
func decodeEntry(b []byte) (Command, error) {
	if len(b) == 0 {
		return nil, invalid("empty command")
	}
	if len(b) > MaxCommandSize {
		return nil, invalid("command of %d bytes is over %d", len(b), MaxCommandSize)
	}
	t := CommandType(b[0])
	ptr := newCommand(t)
	if ptr == nil {
		return nil, fmt.Errorf("%w %d", ErrUnknownCommand, t)
	}
	dec := json.NewDecoder(bytes.NewReader(b[1:]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(ptr); err != nil {
		return nil, invalid("decode command type %d: %v", t, err)
	}
	if dec.More() {
		return nil, invalid("trailing data after command type %d", t)
	}
	return deref(ptr), nil
}

func deref(c Command) Command {
	switch v := c.(type) {
	case *Bootstrap:
		return *v
	case *SetConfig:
		return *v
	case *Initialize:
		return *v
	case *RegisterMember:
		return *v
	case *ReportStatus:
		return *v
	case *RemoveMember:
		return *v
	case *SetLeader:
		return *v
	case *RenewLeader:
		return *v
	case *SetSync:
		return *v
	case *SetFailover:
		return *v
	case *SetPause:
		return *v
	case *Barrier:
		return *v
	}
	return c
}
