//go:build unix

package checkpoint

import (
	"io/fs"
	"syscall"
)

// fileKey identifies one version of a source file well enough to reuse a
// previously computed checksum: pebble's checkpoints hard-link SSTs from the
// live store, so an unchanged SST keeps its inode, size and mtime from one
// staging directory to the next.
type fileKey struct {
	name     string
	size     int64
	mtime    int64
	dev, ino uint64
}

func makeFileKey(name string, info fs.FileInfo) fileKey {
	k := fileKey{name: name, size: info.Size(), mtime: info.ModTime().UnixNano()}
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		k.dev = uint64(st.Dev)
		k.ino = uint64(st.Ino)
	}
	return k
}
