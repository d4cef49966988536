package pipeline

import "github.com/cockroachdb/pebble/v2/vfs"

// noSyncFS is the live store's file system: every file and directory
// sync is a no-op. The live store is a cache of the newest snapshot plus
// the replayed input, rebuilt from a snapshot on every assignment and
// never trusted after a crash (docs/DESIGN.md, section 5), so its syncs
// buy nothing; what must survive a crash is the published snapshot, which
// the checkpoint storage writes and syncs itself (it copies, never links,
// the live store's files). Without them, a flush, an ingest or a
// compaction does not wait for the disk: restoring a changelog chain
// ingests one table per segment, each ingest syncing the table, the
// directory and the manifest.
type noSyncFS struct{ vfs.FS }

type noSyncFile struct{ vfs.File }

func (noSyncFile) Sync() error                { return nil }
func (noSyncFile) SyncData() error            { return nil }
func (noSyncFile) SyncTo(int64) (bool, error) { return true, nil }
func wrapNoSync(f vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return nil, err
	}
	return noSyncFile{f}, nil
}

func (fs noSyncFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	return wrapNoSync(fs.FS.Create(name, c))
}

func (fs noSyncFS) OpenReadWrite(name string, c vfs.DiskWriteCategory, o ...vfs.OpenOption) (vfs.File, error) {
	return wrapNoSync(fs.FS.OpenReadWrite(name, c, o...))
}

func (fs noSyncFS) OpenDir(name string) (vfs.File, error) {
	return wrapNoSync(fs.FS.OpenDir(name))
}

func (fs noSyncFS) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	return wrapNoSync(fs.FS.ReuseForWrite(oldname, newname, c))
}
