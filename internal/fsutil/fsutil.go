// Package fsutil writes files so that a crash leaves either the old or the
// new content, whole: the one atomic file writer of raftgres.
package fsutil

import (
	"fmt"
	"os"
	"path/filepath"
)

// TempSuffix names the temporary file beside the one being written: a name
// no other program uses (PostgreSQL's own ALTER SYSTEM writes
// postgresql.auto.conf.tmp in the data directory).
const TempSuffix = ".raftgres-tmp"

// WriteFile writes data to path through a temporary file beside it: the
// temporary file is written, given perm, synced and renamed over path, then
// the directory is synced so the rename itself survives a crash.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	return WriteFileWith(path, data, perm, nil)
}

// WriteFileWith is WriteFile with prepare run on the synced temporary file
// before the rename (to chown it, say). An error from prepare removes the
// temporary file and leaves path as it was.
func WriteFileWith(path string, data []byte, perm os.FileMode, prepare func(tmp string) error) error {
	tmp := path + TempSuffix
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm) // OpenFile's mode passed through the umask
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if prepare != nil {
		if err := prepare(tmp); err != nil {
			_ = os.Remove(tmp)
			return err
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("rename %s to %s: %w", tmp, path, err)
	}
	return SyncDir(filepath.Dir(path))
}

// SyncDir syncs a directory, making the renames and removals in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
