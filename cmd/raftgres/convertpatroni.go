package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"

	"raftgres/config"
	"raftgres/config/patroni"
	"raftgres/internal/conf"
	"raftgres/raftstore"
)

func convertPatroniCommand() *cli.Command {
	return &cli.Command{
		Name:      "convert-patroni",
		Usage:     "write a raftgres config made from a Patroni config on stdout",
		ArgsUsage: "patroni.yml",
		Description: "Reads a Patroni 3 config (patroni.yml) and writes the raftgres config of the same member on\n" +
			"stdout: scope, name, restapi, postgresql (addresses, directories, credentials, parameters,\n" +
			"callbacks, pg_hba), bootstrap (dcs, initdb, pg_hba, users), tags, watchdog and log.level.\n" +
			"The raft: section, which replaces etcd:, comes from the flags. Convert every host's\n" +
			"patroni.yml with the same --peers and --token-file:\n\n" +
			"  raftgres convert-patroni --raft-addr 10.0.0.11:7001 --token-file /root/raftgres.token \\\n" +
			"    --peers pg1=10.0.0.11:7001,pg2=10.0.0.12:7001,pg3=10.0.0.13:7001 \\\n" +
			"    /etc/patroni/patroni.yml > raftgres.yml\n\n" +
			"--token-file FILE: the cluster token (raft.token), which every host needs the same. When FILE\n" +
			"does not exist, a random 32-byte token is written to it (mode 0600): convert the first host,\n" +
			"copy FILE to the others, and convert theirs with it.\n\n" +
			"Every Patroni key that is not converted is listed on stderr as FILE:LINE: KEY: not converted:\n" +
			"why (the DCS sections, callbacks and methods raftgres does not have, parameters raftgres sets\n" +
			"itself); values are never printed. Only patroni.yml is read: settings changed since with\n" +
			"patronictl edit-config live in the DCS (compare patronictl show-config). The output is checked\n" +
			"as check-config does before it is printed; if it would not load, the problems go to stderr\n" +
			"and nothing to stdout. It holds passwords: install it with mode 0600.\n\n" +
			"Exit status: 0 converted (even with keys not converted), 1 the result would not load,\n" +
			"2 bad flags or an unreadable patroni.yml.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "member", Usage: "this member's `NAME` (default: Patroni's name)"},
			&cli.StringFlag{Name: "raft-addr", Usage: "this member's Raft address `HOST:PORT` (raft.listen; required)"},
			&cli.StringFlag{Name: "peers", Usage: "every member's Raft address, this one's included: " +
				"`NAME=HOST:PORT,...` (raft.bootstrap_peers; required)"},
			&cli.StringFlag{Name: "data-dir", Value: "/var/lib/raftgres", Usage: "raftgres's own state `DIR` (Raft log, snapshots)"},
			&cli.StringFlag{Name: "token-file", Usage: "cluster token `FILE`: read, or created with a new random token (required)"},
		},
		OnUsageError: usageError("convert-patroni"),
		Action: func(c *cli.Context) error {
			if c.Args().Len() != 1 {
				return cli.Exit("convert-patroni: usage: raftgres convert-patroni --raft-addr HOST:PORT --peers NAME=HOST:PORT,... "+
					"--token-file FILE [--member NAME] [--data-dir DIR] patroni.yml", 2)
			}
			f := convertFlags{Source: c.Args().First(), Member: c.String("member"), RaftAddr: c.String("raft-addr"),
				Peers: c.String("peers"), DataDir: c.String("data-dir"), TokenFile: c.String("token-file")}
			if code := runConvertPatroni(f, c.App.Writer, c.App.ErrWriter); code != 0 {
				return cli.Exit("", code)
			}
			return nil
		},
	}
}

// convertFlags are convert-patroni's arguments as given.
type convertFlags struct {
	Source    string
	Member    string
	RaftAddr  string
	Peers     string
	DataDir   string
	TokenFile string
}

// tokenPlaceholder stands for the token while the input is checked, so
// that no token file is created for an input that cannot be converted.
const tokenPlaceholder = "token-placeholder"

// runConvertPatroni converts f.Source, printing the config on stdout and
// the keys not converted on stderr, and returns the exit status: 0
// converted, 1 the result would not load, 2 bad flags or input.
func runConvertPatroni(f convertFlags, stdout, stderr io.Writer) int {
	opts, err := f.options()
	if err != nil {
		fmt.Fprintln(stderr, "convert-patroni:", err)
		return 2
	}
	src, err := os.ReadFile(f.Source)
	if err != nil {
		fmt.Fprintln(stderr, "convert-patroni:", err)
		return 2
	}
	// A dry run first: a config that cannot be made creates no token file.
	opts.Token = tokenPlaceholder
	conv, err := patroni.Convert(src, opts)
	if err != nil {
		fmt.Fprintln(stderr, "convert-patroni:", err)
		return 2
	}
	if problems := conv.Check(); len(problems) > 0 {
		for _, u := range conv.Skipped {
			fmt.Fprintln(stderr, u.Format(f.Source))
		}
		printConvertProblems(stderr, f.Source, problems)
		return 1
	}
	token, created, err := clusterToken(f.TokenFile, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "convert-patroni:", err)
		return 2
	}
	opts.Token = token
	if conv, err = patroni.Convert(src, opts); err != nil {
		fmt.Fprintln(stderr, "convert-patroni:", err)
		return 2
	}
	for _, u := range conv.Skipped {
		fmt.Fprintln(stderr, u.Format(f.Source))
	}
	if problems := conv.Check(); len(problems) > 0 {
		printConvertProblems(stderr, f.Source, problems)
		return 1
	}
	if _, err := stdout.Write(conv.YAML); err != nil {
		fmt.Fprintln(stderr, "convert-patroni:", err)
		return 1
	}
	if created {
		fmt.Fprintf(stderr, "convert-patroni: wrote a new cluster token to %s (mode 0600): convert the other hosts' "+
			"configs with the same --token-file\n", f.TokenFile)
	}
	return 0
}

// printConvertProblems reports why the converted config would not load,
// at the Patroni line each key came from when there is one.
func printConvertProblems(w io.Writer, source string, problems []*config.LineError) {
	fmt.Fprintf(w, "convert-patroni: the converted config would not load (%s), nothing written:\n",
		plural(len(problems), "problem"))
	for _, p := range problems {
		if p.Line > 0 {
			fmt.Fprintln(w, p.Located(source))
		} else {
			fmt.Fprintln(w, p.Located("converted config"))
		}
	}
}

// options checks the flags.
func (f convertFlags) options() (patroni.Options, error) {
	opts := patroni.Options{Source: f.Source, Member: f.Member, RaftAddr: f.RaftAddr, DataDir: f.DataDir}
	if f.Member != "" && !config.ValidName(f.Member) {
		return opts, fmt.Errorf("--member: letters, digits, '.', '_' or '-', got %q", f.Member)
	}
	if f.RaftAddr == "" {
		return opts, errors.New("--raft-addr HOST:PORT is required: this member's Raft address (raft.listen)")
	}
	if err := conf.CheckHostPort(f.RaftAddr, true); err != nil {
		return opts, fmt.Errorf("--raft-addr: %w", err)
	}
	peers, err := parsePeers(f.Peers)
	if err != nil {
		return opts, fmt.Errorf("--peers: %w", err)
	}
	opts.Peers = peers
	if !filepath.IsAbs(f.DataDir) {
		return opts, fmt.Errorf("--data-dir: must be an absolute path, got %q", f.DataDir)
	}
	if f.TokenFile == "" {
		return opts, errors.New("--token-file FILE is required: the cluster token every host shares " +
			"(created with a new random token when FILE does not exist)")
	}
	return opts, nil
}

// parsePeers reads --peers: NAME=HOST:PORT,...
func parsePeers(s string) ([]raftstore.Peer, error) {
	var peers []raftstore.Peer
	seen := map[string]bool{}
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		id, addr, ok := strings.Cut(part, "=")
		if !ok || !config.ValidName(id) {
			return nil, fmt.Errorf("%q: must be NAME=HOST:PORT", part)
		}
		if err := conf.CheckHostPort(addr, false); err != nil {
			return nil, fmt.Errorf("%s: %w", id, err)
		}
		if seen[id] {
			return nil, fmt.Errorf("%s: listed twice", id)
		}
		seen[id] = true
		peers = append(peers, raftstore.Peer{ID: id, Address: addr})
	}
	if len(peers) == 0 {
		return nil, errors.New("is required: NAME=HOST:PORT,... for every member, this one included")
	}
	return peers, nil
}

// clusterToken reads the cluster token from path or, when path does not
// exist, writes a new random one there (mode 0600) and reports it created.
func clusterToken(path string, warn io.Writer) (token string, created bool, err error) {
	for range 2 {
		data, err := os.ReadFile(path)
		if err == nil {
			token := strings.TrimSpace(string(data))
			if token == "" || strings.ContainsFunc(token, func(r rune) bool { return r < 0x21 || r > 0x7e }) {
				return "", false, fmt.Errorf("token file %s: must hold one token of printable characters without spaces", path)
			}
			if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
				fmt.Fprintf(warn, "convert-patroni: warning: token file %s is readable by group or others (mode %04o): run chmod 600 %s\n",
					path, fi.Mode().Perm(), path)
			}
			return token, false, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", false, fmt.Errorf("token file: %w", err)
		}
		b := make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			return "", false, fmt.Errorf("new token: %w", err)
		}
		token = hex.EncodeToString(b)
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			continue // made meanwhile: read it
		}
		if err != nil {
			return "", false, fmt.Errorf("token file: %w", err)
		}
		_, err = f.WriteString(token + "\n")
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(path)
			return "", false, fmt.Errorf("token file: %w", err)
		}
		return token, true, nil
	}
	return "", false, fmt.Errorf("token file %s: created and removed while reading it", path)
}
