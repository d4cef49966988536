//go:build !unix

package checkpoint

import "io/fs"

// fileKey identifies one version of a source file well enough to reuse a
// previously computed checksum (no inode on this platform: name, size and
// mtime only).
type fileKey struct {
	name     string
	size     int64
	mtime    int64
	dev, ino uint64
}

func makeFileKey(name string, info fs.FileInfo) fileKey {
	return fileKey{name: name, size: info.Size(), mtime: info.ModTime().UnixNano()}
}
