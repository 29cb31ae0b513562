package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/urfave/cli/v2"

	"raftgres/internal/fsutil"
	"raftgres/raftstore"
)

func snapshotCommand() *cli.Command {
	return &cli.Command{
		Name:  "snapshot",
		Usage: "export or verify an audit snapshot of the replicated state (signed with raft.audit_key_file); make a signing key",
		Description: "An export is a JSON file of the cluster state (config, leader key, members, voters,\n" +
			"history) at a Raft index and term, with a SHA-256 digest of its body. When the agent that\n" +
			"answers has raft.audit_key_file (a PEM PKCS#8 Ed25519 private key, mode 0600), the body,\n" +
			"index and term included, is also signed with that key, and `snapshot verify --pubkey\n" +
			"KEY.pub` proves who wrote it: a digest alone can be recomputed by anyone who edits the file.",
		Subcommands: []*cli.Command{snapshotExportCommand(), snapshotVerifyCommand(), snapshotKeygenCommand()},
	}
}

func snapshotExportCommand() *cli.Command {
	return &cli.Command{
		Name: "export",
		Usage: "write the cluster state to a JSON file (signed by the answering agent when it has " +
			"raft.audit_key_file)",
		Flags: append(adminFlags(), &cli.StringFlag{Name: "out", Aliases: []string{"o"}, Usage: "output `FILE`", Required: true}),
		Action: func(c *cli.Context) error {
			client, err := adminClient(c)
			if err != nil {
				return cli.Exit(err.Error(), 2)
			}
			b, err := client.Snapshot(c.Context)
			if err != nil {
				return cli.Exit("snapshot export: "+err.Error(), 1)
			}
			e, err := raftstore.VerifyExport(b, nil)
			if err != nil {
				return cli.Exit("snapshot export: the member sent a bad export: "+err.Error(), 1)
			}
			if err := fsutil.WriteFile(c.String("out"), b, 0o600); err != nil {
				return cli.Exit("snapshot export: "+err.Error(), 1)
			}
			sig := "signed by key " + e.KeyID
			if !e.Signed() {
				sig = "unsigned: set raft.audit_key_file on the agents to sign exports"
			}
			fmt.Fprintf(c.App.Writer, "wrote %s (%d bytes, raft index %d, term %d, exported by %s; %s)\n",
				c.String("out"), len(b), e.Body.RaftIndex, e.Body.RaftTerm, printable(e.Body.ExportedBy), sig)
			return nil
		},
	}
}

func snapshotVerifyCommand() *cli.Command {
	return &cli.Command{
		Name:      "verify",
		Usage:     "check an export's layout, digest and, with --pubkey, its signature (exit 0 ok, 1 refused, 2 usage)",
		ArgsUsage: "FILE",
		Description: "Without --pubkey, checks the layout and the SHA-256 digest and says whether the file is\n" +
			"signed (and by which key), without checking the signature. With --pubkey (a PEM Ed25519\n" +
			"public key, e.g. from `snapshot keygen` or `openssl pkey -in KEY -pubout`) the file must be\n" +
			"signed by that key. Exit 1 names the reason: \"export body modified\" (the body does not\n" +
			"match its digest or signature), \"export signed by another key\" (signed by key X, not Y),\n" +
			"\"truncated or malformed export\", or \"export unsigned\" (with --pubkey).",
		Flags: []cli.Flag{&cli.StringFlag{Name: "pubkey", Usage: "require a signature by the Ed25519 public key in PEM `FILE`"}},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return cli.Exit("snapshot verify: give exactly one FILE", 2)
			}
			path := c.Args().First()
			var pub ed25519.PublicKey
			if kf := c.String("pubkey"); kf != "" {
				b, err := readLimited(kf, 64<<10)
				if err != nil {
					return cli.Exit("snapshot verify: --pubkey: "+err.Error(), 2)
				}
				if pub, err = raftstore.ParseAuditPublicKey(b); err != nil {
					return cli.Exit(fmt.Sprintf("snapshot verify: --pubkey %s: %v", kf, err), 2)
				}
			}
			b, err := readLimited(path, raftstore.MaxExportSize)
			if err != nil {
				return cli.Exit("snapshot verify: "+err.Error(), 1)
			}
			e, err := raftstore.VerifyExport(b, pub)
			if err != nil {
				return cli.Exit(fmt.Sprintf("snapshot verify %s: %v", path, err), 1)
			}
			fmt.Fprintf(c.App.Writer, "%s: %s\n", path, describeExport(e))
			return nil
		},
	}
}

// describeExport is verify's one-line answer for an accepted file.
func describeExport(e raftstore.Export) string {
	var what string
	switch {
	case e.Verified:
		what = "ok, signature verified: signed by key " + e.KeyID
	case e.Signed():
		what = "digest ok, signed by key " + e.KeyID + " but the signature was NOT checked (give --pubkey FILE)"
	default:
		what = "digest ok, unsigned (anyone who edits the file can recompute a digest: " +
			"set raft.audit_key_file on the agents to sign exports)"
	}
	b := e.Body
	return fmt.Sprintf("%s; scope %s, raft index %d, term %d, %d members, exported by %s at %s (%s)",
		what, printable(b.Scope), b.RaftIndex, b.RaftTerm, len(b.Members), printable(b.ExportedBy),
		b.ExportedAt.Format(time.RFC3339), e.Format)
}

// printable shows a name from a file as is when it is a plain name, quoted
// (and shortened) otherwise, so a file cannot send control sequences to
// the terminal.
func printable(s string) string {
	if len(s) <= 128 && !strings.ContainsFunc(s, func(r rune) bool { return !unicode.IsPrint(r) || r == ' ' }) {
		return s
	}
	if len(s) > 128 {
		s = strings.ToValidUTF8(s[:128], "") + "…"
	}
	return strconv.Quote(s)
}

func snapshotKeygenCommand() *cli.Command {
	return &cli.Command{
		Name:  "keygen",
		Usage: "make an Ed25519 key pair for signing exports: PREFIX.key (0600) and PREFIX.pub",
		Description: "Writes PREFIX.key, the PEM PKCS#8 private key to install as raft.audit_key_file (mode\n" +
			"0600, owned by the agent's user), and PREFIX.pub, the PEM public key for `snapshot verify\n" +
			"--pubkey`. Existing files are never overwritten. `openssl genpkey -algorithm ed25519 -out\n" +
			"PREFIX.key` and `openssl pkey -in PREFIX.key -pubout -out PREFIX.pub` make the same files.",
		Flags: []cli.Flag{&cli.StringFlag{Name: "out", Aliases: []string{"o"}, Usage: "write `PREFIX`.key and PREFIX.pub", Required: true}},
		Action: func(c *cli.Context) error {
			prefix := c.String("out")
			pub, key, err := ed25519.GenerateKey(rand.Reader)
			if err != nil {
				return cli.Exit("snapshot keygen: "+err.Error(), 1)
			}
			priv, pubPEM, err := raftstore.MarshalAuditKeys(key)
			if err != nil {
				return cli.Exit("snapshot keygen: "+err.Error(), 1)
			}
			if err := writeNewFile(prefix+".key", priv, 0o600); err != nil {
				return cli.Exit("snapshot keygen: "+err.Error(), 1)
			}
			if err := writeNewFile(prefix+".pub", pubPEM, 0o644); err != nil {
				_ = os.Remove(prefix + ".key")
				return cli.Exit("snapshot keygen: "+err.Error(), 1)
			}
			fmt.Fprintf(c.App.Writer, "wrote %s.key (private: raft.audit_key_file, mode 0600) and %s.pub (public: snapshot verify --pubkey); key id %s\n",
				prefix, prefix, raftstore.KeyID(pub))
			return nil
		},
	}
}

// readLimited reads a file of at most limit bytes.
func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return b, nil
}

// writeNewFile creates path with mode (which the umask cannot widen or
// narrow) and refuses to replace an existing file.
func writeNewFile(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%s exists: not overwriting it", path)
	} else if err != nil {
		return err
	}
	if err := f.Chmod(mode); err != nil {
		_ = f.Close()
		_ = os.Remove(path)
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		_ = os.Remove(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
