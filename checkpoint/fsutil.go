package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

const (
	copyBufSize = 1 << 20

	// Checkpoints hold the operator's state (financial data): not
	// world-readable. The umask applies on top.
	dirPerm  = 0o750
	filePerm = 0o640
)

var bufPool = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// readError marks a failure on the source side of a copy (open, stat or
// read), as opposed to the destination side (create, write, fsync).
type readError struct{ err error }

func (e *readError) Error() string { return e.err.Error() }
func (e *readError) Unwrap() error { return e.err }

func isReadError(err error) bool {
	var re *readError
	return errors.As(err, &re)
}

// copyFile copies src to dst (which must not exist) through a large
// buffer, computing CRC32C of the bytes on the way, then fsyncs and closes
// dst. On error dst is removed. Source-side failures are *readError.
func copyFile(ctx context.Context, src, dst string) (n int64, crc uint32, err error) {
	return copyFileSync(ctx, src, dst, true)
}

// copyFileSync is copyFile with the fsync optional: a caller that writes
// many files syncs them together afterwards (syncFiles), one device flush
// instead of one per file.
func copyFileSync(ctx context.Context, src, dst string, sync bool) (n int64, crc uint32, err error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, 0, &readError{err}
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, filePerm)
	if err != nil {
		return 0, 0, err
	}
	defer func() {
		if err != nil {
			out.Close()
			os.Remove(dst)
		}
	}()
	n, crc, err = crcCopy(ctx, out, in)
	if err != nil {
		return n, crc, err
	}
	if sync {
		if err := out.Sync(); err != nil {
			return n, crc, err
		}
	}
	if err := out.Close(); err != nil {
		return n, crc, err
	}
	return n, crc, nil
}

// hashFile reads path and returns its size and CRC32C.
func hashFile(ctx context.Context, path string) (n int64, crc uint32, err error) {
	in, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer in.Close()
	n, crc, err = crcCopy(ctx, nil, in)
	var re *readError
	if errors.As(err, &re) {
		err = re.err // reading is all hashFile does: no need to tell sides apart
	}
	return n, crc, err
}

// crcCopy copies in to out (nil: discard) through a pooled buffer and
// returns the byte count and CRC32C. Read failures are *readError, write
// failures are returned as they are; ctx is checked between buffers.
func crcCopy(ctx context.Context, out io.Writer, in io.Reader) (n int64, crc uint32, err error) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	for {
		if err := ctx.Err(); err != nil {
			return n, crc, err
		}
		k, rerr := in.Read(buf)
		if k > 0 {
			crc = crc32.Update(crc, castagnoli, buf[:k])
			if out != nil {
				if _, werr := out.Write(buf[:k]); werr != nil {
					return n, crc, werr
				}
			}
			n += int64(k)
		}
		if rerr == io.EOF {
			return n, crc, nil
		}
		if rerr != nil {
			return n, crc, &readError{rerr}
		}
	}
}

// writeFileSync creates path (which must not exist), writes data, fsyncs
// and closes it.
func writeFileSync(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, filePerm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}

// writeFileAtomic writes dir/name through a temporary file, fsync and
// rename, then fsyncs dir.
func writeFileAtomic(dir, name string, data []byte) error {
	tmp := filepath.Join(dir, tmpPrefix+"file-"+name+"-"+randSuffix())
	if err := writeFileSync(tmp, data); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(dir)
}

// syncDir fsyncs a directory so that entries created, renamed or removed in
// it are durable.
func syncDir(dir string) error {
	err := fsyncPath(dir)
	// Some filesystems do not support fsync on directories.
	if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOTSUP) {
		return nil
	}
	return err
}

// fsyncPath opens path and fsyncs it.
func fsyncPath(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	err = f.Sync()
	cerr := f.Close()
	if err != nil {
		return fmt.Errorf("fsync %s: %w", path, err)
	}
	return cerr
}

// ensureDir creates p and any missing parents, fsyncing the parent of each
// directory it creates.
func ensureDir(p string) error {
	st, err := os.Stat(p)
	if err == nil {
		if st.IsDir() {
			return nil
		}
		return fmt.Errorf("%s exists and is not a directory", p)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	parent := filepath.Dir(p)
	if parent != p {
		if err := ensureDir(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(p, dirPerm); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return syncDir(parent)
}

// removeDirDurably removes dir by first renaming it to a .tmp-del- entry in
// the same parent (fsynced), so that a crash during the removal leaves
// garbage for GC rather than a half-deleted directory under its real name.
func removeDirDurably(dir string) error {
	parent, base := filepath.Split(dir)
	parent = filepath.Clean(parent)
	trash := filepath.Join(parent, delPrefix+base+"-"+randSuffix())
	if err := os.Rename(dir, trash); err != nil {
		return err
	}
	if err := syncDir(parent); err != nil {
		return err
	}
	return os.RemoveAll(trash)
}

// diskUsage returns the total size of the regular files under path.
func diskUsage(path string) int64 {
	var n int64
	_ = filepath.WalkDir(path, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

// dirIsEmpty reports whether dir has no entries.
func dirIsEmpty(dir string) (bool, error) {
	f, err := os.Open(dir)
	if err != nil {
		return false, err
	}
	defer f.Close()
	_, err = f.Readdirnames(1)
	if err == io.EOF {
		return true, nil
	}
	return false, err
}

// readDirIfExists is os.ReadDir with a missing directory read as empty.
func readDirIfExists(dir string) ([]fs.DirEntry, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return ents, nil
}

// readVisible is readDirIfExists without the dot entries: everything this
// package creates besides snapshots, pool files and savepoints (temporary,
// deleted and quarantined entries) starts with ".tmp-".
func readVisible(dir string) ([]fs.DirEntry, error) {
	ents, err := readDirIfExists(dir)
	if err != nil {
		return nil, err
	}
	out := ents[:0]
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), ".") {
			out = append(out, e)
		}
	}
	return out, nil
}
