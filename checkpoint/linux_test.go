//go:build linux

package checkpoint

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestForceCopyAndSavepointLinks(t *testing.T) {
	for _, force := range []bool{false, true} {
		name := "link"
		if force {
			name = "forcecopy"
		}
		t.Run(name, func(t *testing.T) {
			tmp := t.TempDir()
			db := openDB(t, filepath.Join(tmp, "live"))
			defer db.Close()
			s := newStore(t, filepath.Join(tmp, "ckpt"), Options{ForceCopy: force})
			put(t, db, 0, 200, "a", 100)
			src := stage(t, db, tmp)
			m, _ := publish(t, s, tp0, 200, src)
			// Snapshot files are always copies, never links to the source.
			for _, f := range m.Files {
				if nlink(t, s.filePath(m, f)) != 1 {
					t.Fatalf("snapshot file %s is hard-linked", f.Name)
				}
			}
			sp, err := s.Savepoint(context.Background(), "sp", []SavepointPart{{Topic: tp0.Topic, Partition: 0, Offset: 200, SrcDir: src}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			linked := 0
			for _, f := range sp.Partitions[0].Files {
				if nlink(t, filepath.Join(sp.Dir, sp.Partitions[0].Dir, f.Name)) > 1 {
					linked++
				}
			}
			if force && linked != 0 {
				t.Fatalf("ForceCopy: %d savepoint files are hard links", linked)
			}
			if !force && linked == 0 {
				t.Fatal("savepoint did not link any SST from the pool")
			}
			dst := filepath.Join(tmp, "r")
			if _, err := s.Restore(context.Background(), tp0.Topic, 0, 200, dst); err != nil {
				t.Fatal(err)
			}
			checkDB(t, dst, 200, expect{0, 200, "a", 100})
			if _, err := LoadSavepoint(sp.Dir); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func nlink(t testing.TB, p string) uint64 {
	t.Helper()
	info, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return uint64(info.Sys().(*syscall.Stat_t).Nlink)
}

// TestCrossFilesystem puts the live store and the checkpoint dir (and the
// savepoints dir) on different tmpfs mounts. Needs root; skipped otherwise.
func TestCrossFilesystem(t *testing.T) {
	tmp := t.TempDir()
	mnt := func(t *testing.T, name string) string {
		p := filepath.Join(tmp, name)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Mount("tmpfs", p, "tmpfs", 0, "size=256m"); err != nil {
			t.Skipf("cannot mount tmpfs (%v): cross-filesystem path not tested here", err)
		}
		t.Cleanup(func() { syscall.Unmount(p, syscall.MNT_DETACH) })
		return p
	}
	liveFS, ckptFS := mnt(t, "live"), mnt(t, "ckpt")
	for _, mode := range []Mode{ModeFull, ModeIncremental} {
		t.Run(string(mode), func(t *testing.T) {
			db := openDB(t, filepath.Join(liveFS, string(mode)))
			defer db.Close()
			dir := filepath.Join(ckptFS, string(mode))
			s := newStore(t, dir, Options{Mode: mode})
			// savepoints/ on a third filesystem: linking from the pool fails
			// with EXDEV and must fall back to copying.
			if err := os.MkdirAll(filepath.Join(dir, savepointsDir), 0o755); err != nil {
				t.Fatal(err)
			}
			mnt(t, string(mode)+"-sp")
			spFS := filepath.Join(tmp, string(mode)+"-sp")
			if err := syscall.Mount(spFS, filepath.Join(dir, savepointsDir), "", syscall.MS_BIND, ""); err != nil {
				t.Skipf("bind mount: %v", err)
			}
			t.Cleanup(func() { syscall.Unmount(filepath.Join(dir, savepointsDir), syscall.MNT_DETACH) })
			if dev(t, liveFS) == dev(t, dir) || dev(t, dir) == dev(t, filepath.Join(dir, savepointsDir)) {
				t.Fatal("test setup: expected different devices")
			}

			put(t, db, 0, 300, "a", 100)
			publish(t, s, tp0, 300, stage(t, db, liveFS))
			put(t, db, 300, 400, "b", 100)
			src := stage(t, db, liveFS)
			publish(t, s, tp0, 400, src)
			dst := filepath.Join(liveFS, string(mode)+"-restored")
			if _, err := s.Restore(context.Background(), tp0.Topic, 0, 400, dst); err != nil {
				t.Fatal(err)
			}
			checkDB(t, dst, 400, expect{0, 300, "a", 100}, expect{300, 400, "b", 100})

			sp, err := s.Savepoint(context.Background(), "x", []SavepointPart{{Topic: tp0.Topic, Offset: 400, SrcDir: src}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := LoadSavepoint(sp.Dir); err != nil {
				t.Fatal(err)
			}
			dst2 := filepath.Join(liveFS, string(mode)+"-sp-restored")
			if _, err := RestoreSavepointPartition(context.Background(), sp, tp0.Topic, 0, dst2); err != nil {
				t.Fatal(err)
			}
			checkDB(t, dst2, 400, expect{0, 300, "a", 100}, expect{300, 400, "b", 100})
		})
	}
}

func dev(t testing.TB, p string) uint64 {
	t.Helper()
	info, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return uint64(info.Sys().(*syscall.Stat_t).Dev)
}
