package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"raftgres/internal/conf"
	"raftgres/pgmanager"
	"raftgres/secrets"
)

// maxSecretBytes bounds what is read as a new password.
const maxSecretBytes = 1024

func rotatePasswordCommand() *cli.Command {
	return &cli.Command{
		Name:      "rotate-password",
		Usage:     "change the superuser, replication or rewind role's password on every member without downtime",
		ArgsUsage: "superuser|replication|rewind",
		Description: "Changes the PostgreSQL password of the role that postgresql.authentication names, and the\n" +
			"password every member's agent uses for it (its pgpass file, read by the walreceiver,\n" +
			"pg_basebackup, pg_rewind and pgBackRest, and for the superuser the agent's own connections),\n" +
			"so that replication never stops.\n\n" +
			"The new password is read from --password-file FILE (its first line) or from standard input\n" +
			"(one line; on a terminal it is asked twice and not echoed). It is never taken from the\n" +
			"command line, where ps, /proc and the shell history would show it: there is no flag for it.\n\n" +
			"Steps: every member checks it can take part (all must answer, or nothing is changed); every\n" +
			"member stores the new password in data_dir/secrets.yml (0600) without using it; the primary\n" +
			"changes the role (a SCRAM verifier, never the password, goes to PostgreSQL) and uses the new\n" +
			"password; then every other member does. Open connections stay up; a walreceiver that\n" +
			"reconnects in the moment between the last two steps fails once and retries.\n\n" +
			"If a step fails, the command prints each member's state: run it again with the same new\n" +
			"password to finish (every step is idempotent). The config files still hold the old\n" +
			"password: secrets.yml overrides it, also after a restart, until you put the new one in each\n" +
			"member's config file (the agent then drops the override when it starts). It talks to the\n" +
			"agents' internal API with the cluster token (-c FILE, or --api URL with --token).",
		Flags: []cli.Flag{configFlag(false), apiFlag(), tokenFlag(),
			&cli.StringFlag{Name: "password-file", Usage: "read the new password from the first line of `FILE` (default: standard input)"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return cli.Exit("rotate-password: give exactly one ROLE (superuser, replication or rewind); "+
					"the new password is never an argument: use --password-file FILE or standard input", 2)
			}
			role, err := pgmanager.ParseRole(c.Args().First())
			if err != nil {
				return cli.Exit("rotate-password: "+err.Error(), 2)
			}
			secret, err := readNewSecret(c, role)
			if err != nil {
				return cli.Exit("rotate-password: "+err.Error(), 2)
			}
			client, err := clientOrExit(c)
			if err != nil {
				return err
			}
			if err := secrets.Rotate(c.Context, c.App.Writer, c.App.ErrWriter, secrets.ClientCluster{Client: client}, role, secret); err != nil {
				return cli.Exit("rotate-password: "+err.Error(), 1)
			}
			return nil
		},
	}
}

// readNewSecret reads the new password from --password-file or standard
// input and checks it.
func readNewSecret(c *cli.Context, role pgmanager.Role) (conf.Secret, error) {
	if path := c.String("password-file"); path != "" {
		return readSecretFile(path, c.App.ErrWriter)
	}
	if f, ok := c.App.Reader.(*os.File); ok {
		if s, err := readSecretTerminal(f, c.App.ErrWriter, role); !errors.Is(err, errNotTerminal) {
			return s, err
		}
	}
	line, err := readLine(c.App.Reader)
	if err != nil {
		return "", fmt.Errorf("read the new password from standard input: %w", err)
	}
	if line == "" {
		return "", errors.New("no password on standard input (pipe one line, or use --password-file FILE)")
	}
	return checkedSecret(line)
}

// readSecretFile reads the first line of path: the file must hold that
// line only (a trailing newline and empty lines after it are fine).
func readSecretFile(path string, warn io.Writer) (conf.Secret, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("password file: %w", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o077 != 0 {
		fmt.Fprintf(warn, "warning: the password file %s is readable by group or others (mode %04o)\n", path, fi.Mode().Perm())
	}
	data, err := io.ReadAll(io.LimitReader(f, maxSecretBytes+1))
	if err != nil {
		return "", fmt.Errorf("password file %s: %w", path, err)
	}
	if len(data) > maxSecretBytes {
		return "", fmt.Errorf("password file %s: longer than %d bytes", path, maxSecretBytes)
	}
	first, rest, _ := bytes.Cut(data, []byte("\n"))
	if len(bytes.TrimSpace(rest)) > 0 {
		return "", fmt.Errorf("password file %s: more than one line (the password is the first line, alone)", path)
	}
	if len(first) == 0 || string(first) == "\r" {
		return "", fmt.Errorf("password file %s: the first line is empty", path)
	}
	s, err := checkedSecret(strings.TrimSuffix(string(first), "\r"))
	if err != nil {
		return "", fmt.Errorf("password file %s: %w", path, err)
	}
	return s, nil
}

// readLine reads up to the first newline (or the end), at most
// maxSecretBytes, without the newline and a carriage return before it.
func readLine(r io.Reader) (string, error) {
	br := bufio.NewReaderSize(io.LimitReader(r, maxSecretBytes+2), maxSecretBytes+2)
	line, err := br.ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	if !strings.HasSuffix(line, "\n") && len(line) > maxSecretBytes {
		return "", fmt.Errorf("longer than %d bytes", maxSecretBytes)
	}
	line = strings.TrimSuffix(line, "\n")
	return strings.TrimSuffix(line, "\r"), nil
}

func checkedSecret(s string) (conf.Secret, error) {
	p := conf.Secret(s)
	if err := pgmanager.CheckNewPassword(p); err != nil {
		return "", err
	}
	return p, nil
}

var errNotTerminal = errors.New("not a terminal")

// readSecretTerminal asks for the password twice on a terminal with echo
// off (restored afterwards, also on Ctrl-C); errNotTerminal when f is not
// a terminal.
func readSecretTerminal(f *os.File, prompt io.Writer, role pgmanager.Role) (conf.Secret, error) {
	fd := int(f.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return "", errNotTerminal
	}
	quiet := *old
	quiet.Lflag &^= unix.ECHO
	quiet.Lflag |= unix.ICANON | unix.ISIG
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &quiet); err != nil {
		return "", fmt.Errorf("turn terminal echo off: %w", err)
	}
	restore := func() { _ = unix.IoctlSetTermios(fd, unix.TCSETS, old) }
	defer restore()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt)
	done := make(chan struct{})
	defer func() { signal.Stop(sig); close(done) }()
	go func() {
		select {
		case <-sig:
			restore()
			fmt.Fprintln(prompt)
			os.Exit(130)
		case <-done:
		}
	}()
	rd := bufio.NewReader(f)
	ask := func(label string) (string, error) {
		fmt.Fprint(prompt, label)
		line, err := readLine(rd)
		fmt.Fprintln(prompt)
		return line, err
	}
	first, err := ask(fmt.Sprintf("New password for the %s role (not echoed): ", role))
	if err != nil {
		return "", err
	}
	s, err := checkedSecret(first)
	if err != nil {
		return "", err
	}
	again, err := ask("Again: ")
	if err != nil {
		return "", err
	}
	if again != first {
		return "", errors.New("the two passwords differ")
	}
	return s, nil
}
