package kafkatest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
)

// SmallDisk is a node's data directory on a file system of its own, an
// ext4 file system in a loop file, mostly taken by a ballast file so that
// the node can write only a few more MiB: a disk about to fill up, made
// without touching the machine's own disks.
type SmallDisk struct {
	c       *Cluster
	i       int
	mnt     string // where the file system is mounted
	ballast string // the file that takes the space
	img     string
}

// SmallDiskAvailable says whether LimitDisk can work here: Linux, root,
// mkfs.ext4, mount and umount, and a loop device.
func SmallDiskAvailable() (bool, string) {
	if runtime.GOOS != "linux" {
		return false, "needs Linux (loop devices)"
	}
	if os.Geteuid() != 0 {
		return false, "needs root (mount -o loop)"
	}
	for _, tool := range []string{"mkfs.ext4", "mount", "umount", "losetup"} {
		if _, err := exec.LookPath(tool); err != nil {
			return false, fmt.Sprintf("needs %s on PATH", tool)
		}
	}
	if out, err := exec.Command("losetup", "-f").CombinedOutput(); err != nil {
		return false, fmt.Sprintf("no free loop device (losetup -f: %v: %s)", err, strings.TrimSpace(string(out)))
	}
	return true, ""
}

// LimitDisk stops node i (SIGTERM), moves its data directory onto a new
// ext4 file system (a loop file in the cluster's directory; DIR/data
// becomes a symbolic link into it, so that the file system's lost+found is
// not in Kafka's log directory) and fills that file system with a ballast
// file until free bytes are left. The node stays stopped: start it with
// StartNode. The file system is unmounted when the test ends.
func (c *Cluster) LimitDisk(i int, free int64) (*SmallDisk, error) {
	if ok, why := SmallDiskAvailable(); !ok {
		return nil, fmt.Errorf("a small disk %s", why)
	}
	n := c.Nodes[i]
	c.Stop(i)
	data := filepath.Join(n.Dir, "data")
	used, err := diskUsage(data)
	if err != nil {
		return nil, err
	}
	d := &SmallDisk{c: c, i: i, img: filepath.Join(c.Dir, fmt.Sprintf("node%d-disk.img", i)),
		mnt: filepath.Join(n.Dir, "disk")}
	d.ballast = filepath.Join(d.mnt, "ballast")
	// Room for the data, the journal and the free space, with margin: the
	// ballast takes what is left over.
	size := 2*used + free + 64<<20
	steps := [][]string{
		{"truncate", "-s", fmt.Sprint(size), d.img},
		{"mkfs.ext4", "-q", "-F", "-m", "0", d.img}, // -m 0: the broker runs as root
		{"mkdir", "-p", d.mnt},
		{"mount", "-o", "loop", d.img, d.mnt},
	}
	for _, s := range steps {
		if out, err := exec.Command(s[0], s[1:]...).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("%s: %v: %s", strings.Join(s, " "), err, strings.TrimSpace(string(out)))
		}
		if s[0] == "mount" {
			c.t.Cleanup(d.unmount)
		}
	}
	if out, err := exec.Command("cp", "-a", "--sparse=always", data, filepath.Join(d.mnt, "data")).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("copying %s onto the small disk: %v: %s", data, err, out)
	}
	if err := os.RemoveAll(data); err != nil {
		return nil, err
	}
	if err := os.Symlink(filepath.Join(d.mnt, "data"), data); err != nil {
		return nil, err
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(d.mnt, &st); err != nil {
		return nil, err
	}
	avail := int64(st.Bavail) * st.Bsize
	if avail <= free {
		return nil, fmt.Errorf("the small disk has %d bytes free, want more than %d", avail, free)
	}
	f, err := os.Create(d.ballast)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := syscall.Fallocate(int(f.Fd()), 0, 0, avail-free); err != nil {
		return nil, fmt.Errorf("ballast of %d bytes: %w", avail-free, err)
	}
	c.t.Logf("Kafka node %d: data (%d KiB) on a %d MiB loop file system with %d KiB free", i, used>>10, size>>20, d.Free()>>10)
	return d, nil
}

// Free is the file system's free space in bytes.
func (d *SmallDisk) Free() int64 {
	var st syscall.Statfs_t
	if err := syscall.Statfs(d.mnt, &st); err != nil {
		return -1
	}
	return int64(st.Bavail) * st.Bsize
}

// RemoveBallast gives the ballast's space back: the disk has room again.
func (d *SmallDisk) RemoveBallast() error { return os.Remove(d.ballast) }

func (d *SmallDisk) unmount() {
	d.c.Nodes[d.i].Kill()
	if out, err := exec.Command("umount", d.mnt).CombinedOutput(); err != nil {
		// Lazily then: the test is over, nothing writes there any more.
		if out2, err2 := exec.Command("umount", "-l", d.mnt).CombinedOutput(); err2 != nil {
			d.c.t.Logf("umount %s: %v: %s; %v: %s", d.mnt, err, out, err2, out2)
		}
	}
}

// StartNode starts node i on its address and data (killing it first if it
// runs) and returns once it serves, without waiting for the cluster to be
// healthy; the error says why it did not start (with its log's tail).
func (c *Cluster) StartNode(i int) error {
	n := c.Nodes[i]
	n.Kill()
	return n.startOnce(n.port)
}

// diskUsage is the space the files under dir take on disk, in bytes.
func diskUsage(dir string) (int64, error) {
	var total int64
	err := filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			total += st.Blocks * 512
		}
		return nil
	})
	return total, err
}
