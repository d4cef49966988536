//go:build linux

package checkpoint

import (
	"os"

	"golang.org/x/sys/unix"
)

// batchSync makes many newly written files durable with one syncfs(2) of
// their filesystem, as `cp -r; sync` does, instead of a device flush per
// file. The directory is opened before the files are written: syncfs
// reports write-back errors of the filesystem since the descriptor was
// opened, so an error during the writes is not missed.
type batchSync struct{ d *os.File }

func startBatchSync(dir string) (*batchSync, error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	return &batchSync{d: d}, nil
}

// finish syncs; names are the files written since start (the fallback
// fsyncs them one by one where syncfs is refused).
func (b *batchSync) finish(names []string) error {
	if err := unix.Syncfs(int(b.d.Fd())); err != nil && (err == unix.ENOSYS || err == unix.EPERM) {
		return fsyncEach(names)
	} else if err != nil {
		return err
	}
	return nil
}

func (b *batchSync) close() { b.d.Close() }
