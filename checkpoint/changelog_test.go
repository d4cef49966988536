package checkpoint

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/txstream/txstream/test/s3test"
)

// segBody builds a body of n epochs of changes starting after position
// from: epoch i sets key-i to "v<i>" and deletes key-(i-1), at position
// from+10*(i+1).
func segBody(from int64, n int) *ChangeBuffer {
	var b ChangeBuffer
	for i := 0; i < n; i++ {
		b.Set(key(i), fmt.Appendf(nil, "v%d", i))
		if i > 0 {
			b.Delete(key(i - 1))
		}
		b.EndEpoch(from + int64(10*(i+1)))
	}
	return &b
}

func encodeSeg(t testing.TB, base string, seq, first int64, body *ChangeBuffer) ([]byte, Segment) {
	t.Helper()
	data, g, err := EncodeSegment(Segment{Topic: tp0.Topic, Partition: tp0.Partition, Base: base, Seq: seq, First: first}, body)
	if err != nil {
		t.Fatal(err)
	}
	return data, g
}

func TestSegmentEncoding(t *testing.T) {
	data, g := encodeSeg(t, "00000000000000000100-x", 1, 100, segBody(100, 3))
	if g.Last != 130 || g.Epochs != 3 || g.Changes != 5 || g.Name() != "0000000001-00000000000000000100-00000000000000000130.seg" {
		t.Fatalf("encoded %+v name %s", g, g.Name())
	}
	d, err := DecodeSegment(data)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	if err := d.Each(func(kind byte, k, v []byte, pos int64) error {
		got = append(got, fmt.Sprintf("%c %s %s %d", kind, k, v, pos))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := "S key-00000000 v0 0|E   110|S key-00000001 v1 0|D key-00000000  0|E   120|S key-00000002 v2 0|D key-00000001  0|E   130"
	if strings.Join(got, "|") != want {
		t.Fatalf("records\n%s\nwant\n%s", strings.Join(got, "|"), want)
	}

	// Every single flipped byte, and every truncation, is detected
	// (never a panic, never a silently different segment).
	for i := range data {
		bad := append([]byte(nil), data...)
		bad[i] ^= 0x40
		if _, err := DecodeSegment(bad); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("byte %d flipped: %v", i, err)
		}
	}
	for n := 0; n < len(data); n++ {
		if _, err := DecodeSegment(data[:n]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated to %d: %v", n, err)
		}
	}
	// A well-formed checksum over a damaged structure (a writer bug, not
	// bit rot) is refused too: an uncompressed body that ends inside an
	// epoch, or that does not match the header's counts.
	body := segBody(100, 3)
	plain := func(g Segment, b []byte) []byte {
		g.Compression, g.BodyBytes = "", int64(len(b))
		h, _ := json.Marshal(g)
		out := append([]byte(segmentMagic), binary.BigEndian.AppendUint32(nil, uint32(len(h)))...)
		out = append(append(out, h...), b...)
		return binary.BigEndian.AppendUint32(out, crc32c(out))
	}
	if _, err := DecodeSegment(plain(g, body.buf)); err != nil {
		t.Fatalf("uncompressed segment: %v", err)
	}
	if _, err := DecodeSegment(plain(g, body.buf[:len(body.buf)-2])); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("body without its epoch end: %v", err)
	}
	g2 := g
	g2.Changes++
	if _, err := DecodeSegment(plain(g2, body.buf)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("counts that do not match the body: %v", err)
	}
	if g.Compression != "zstd" || g.BodyBytes != int64(len(body.buf)) {
		t.Fatalf("segment %+v: want a zstd body of %d bytes", g, len(body.buf))
	}
	big := segBody(100, 2000)
	if _, bg := encodeSeg(t, "b", 1, 100, big); bg.Size*2 > int64(big.Len()) {
		t.Fatalf("a %d-byte body was stored in %d bytes: not compressed", big.Len(), bg.Size)
	}
	if _, _, err := EncodeSegment(Segment{Topic: "t", Base: "b", Seq: 1}, &ChangeBuffer{}); err == nil {
		t.Fatal("an empty segment was encoded")
	}
}

func crc32c(b []byte) uint32 { return crc32.Checksum(b, crcTable) }

// TestTableSegmentEncoding: a table segment keeps its body byte for byte,
// takes its counts from the change buffer, refuses Each, and any flipped
// byte or truncation is detected.
func TestTableSegmentEncoding(t *testing.T) {
	body := segBody(100, 3)
	table := []byte("not really a table, but opaque to the framing")
	data, g, err := EncodeTableSegment(Segment{Topic: tp0.Topic, Partition: tp0.Partition, Base: "b", Seq: 2, First: 100}, body, table)
	if err != nil {
		t.Fatal(err)
	}
	if g.Body != BodyTable || g.Last != 130 || g.Epochs != 3 || g.Changes != 5 || g.BodyBytes != int64(len(table)) || g.Compression != "" {
		t.Fatalf("encoded %+v", g)
	}
	d, err := DecodeSegment(data)
	if err != nil {
		t.Fatal(err)
	}
	if string(d.Table()) != string(table) || d.Last != 130 {
		t.Fatalf("decoded %+v table %q", d.Segment, d.Table())
	}
	if err := d.Each(func(byte, []byte, []byte, int64) error { return nil }); err == nil {
		t.Fatal("Each over a table segment did not fail")
	}
	for i := range data {
		bad := append([]byte(nil), data...)
		bad[i] ^= 0x40
		if _, err := DecodeSegment(bad); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("byte %d flipped: %v", i, err)
		}
	}
	for n := 0; n < len(data); n++ {
		if _, err := DecodeSegment(data[:n]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated to %d: %v", n, err)
		}
	}
	if rd, err := DecodeSegment(encodeSegBytes(t, body)); err != nil || rd.Table() != nil {
		t.Fatalf("a records segment: table %v, %v", rd.Table(), err)
	}
	if _, _, err := EncodeTableSegment(Segment{Topic: "t", Base: "b", Seq: 1}, &ChangeBuffer{}, table); err == nil {
		t.Fatal("an empty table segment was encoded")
	}
}

func encodeSegBytes(t *testing.T, body *ChangeBuffer) []byte {
	data, _ := encodeSeg(t, "b", 1, 100, body)
	return data
}

func TestChain(t *testing.T) {
	seg := func(seq, first, last int64) Segment { return Segment{Seq: seq, First: first, Last: last} }
	segs := []Segment{seg(1, 100, 150), seg(2, 150, 150), seg(3, 150, 200), seg(5, 250, 300)}
	if got := Chain(100, segs); len(got) != 3 {
		t.Fatalf("Chain = %v", got)
	}
	if got := Chain(90, segs); len(got) != 0 {
		t.Fatalf("Chain from another base offset = %v", got)
	}
	if got := Chain(100, []Segment{seg(1, 100, 150), seg(2, 160, 170)}); len(got) != 1 {
		t.Fatalf("Chain over a position gap = %v", got)
	}
}

// TestChangelogStorage appends, lists, reads and collects segments on
// both storages.
func TestChangelogStorage(t *testing.T) {
	t.Run("dir", func(t *testing.T) {
		dir := t.TempDir()
		s := newStore(t, filepath.Join(dir, "ck"), Options{Mode: ModeChangelog, Retain: 1, Grace: -1})
		testChangelogStorage(t, s, func(g Segment) string { return filepath.Join(s.Dir(), filepath.FromSlash(g.Path)) })
	})
	t.Run("s3", func(t *testing.T) {
		srv := s3test.Start(t)
		s := newS3(t, srv, "clog", Options{Mode: ModeChangelog, Retain: 1, Grace: -1})
		testChangelogStorage(t, s, func(g Segment) string { return objectPath(srv, s, g.Path) })
	})
}

func testChangelogStorage(t *testing.T, s Storage, pathOf func(Segment) string) {
	ctx := context.Background()
	tmp := t.TempDir()
	db := openDB(t, filepath.Join(tmp, "live"))
	defer db.Close()
	put(t, db, 0, 100, "a", 50)
	base, _ := publishTo(t, s, tp0, 100, stage(t, db, tmp))
	if base.Mode != ModeChangelog {
		t.Fatalf("base mode %s", base.Mode)
	}
	for _, f := range base.Files {
		if (f.Pool != "") != isImmutable(f.Name) {
			t.Fatalf("base file %+v: immutable files go to the pool", f)
		}
	}
	var written []Segment
	from := int64(100)
	for seq := int64(1); seq <= 3; seq++ {
		data, _ := encodeSeg(t, base.ID, seq, from, segBody(from, 2))
		g, err := s.AppendSegment(ctx, data)
		if err != nil {
			t.Fatalf("AppendSegment %d: %v", seq, err)
		}
		// A retry of the same segment is success.
		if _, err := s.AppendSegment(ctx, data); err != nil {
			t.Fatalf("AppendSegment %d again: %v", seq, err)
		}
		written = append(written, g)
		from = g.Last
	}
	// Another segment under a taken name is refused.
	other, _ := encodeSeg(t, base.ID, 2, written[1].First, segBody(written[1].First, 2))
	other[len(other)-5] ^= 1 // differ inside the body, then fix the checksum
	other = binary.BigEndian.AppendUint32(other[:len(other)-4], crc32c(other[:len(other)-4]))
	if _, err := s.AppendSegment(ctx, other); err == nil {
		t.Fatal("a different segment replaced an existing one")
	}

	segs, err := s.Segments(tp0.Topic, tp0.Partition, base.ID)
	if err != nil || len(segs) != 3 {
		t.Fatalf("Segments = %v, %v", segs, err)
	}
	if c := Chain(base.Offset, segs); len(c) != 3 || c[2].Last != 160 {
		t.Fatalf("Chain = %v", c)
	}
	for i, g := range segs {
		if g.Path != written[i].Path || g.Size != written[i].Size || g.Size == 0 {
			t.Fatalf("listed %+v, written %+v", g, written[i])
		}
		d, err := s.ReadSegment(ctx, g)
		if err != nil || d.Epochs != 2 || d.Base != base.ID {
			t.Fatalf("ReadSegment %d: %+v, %v", i, d, err)
		}
	}

	// A damaged segment is ErrCorrupt on read; a missing one too.
	flipByte(t, pathOf(segs[1]), segs[1].Size/2)
	if _, err := s.ReadSegment(ctx, segs[1]); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("ReadSegment of a damaged segment: %v", err)
	}
	gone := segs[2]
	gone.Seq = 9
	if _, err := s.ReadSegment(ctx, gone); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("ReadSegment of a missing segment: %v", err)
	}

	// The next base drops the first (retention 1): its change log goes
	// with it.
	put(t, db, 100, 200, "b", 50)
	base2, _ := publishTo(t, s, tp0, 200, stage(t, db, tmp))
	if segs, err := s.Segments(tp0.Topic, tp0.Partition, base.ID); err != nil || len(segs) != 0 {
		t.Fatalf("segments of a dropped base: %v, %v", segs, err)
	}
	data, _ := encodeSeg(t, base2.ID, 1, 200, segBody(200, 1))
	if _, err := s.AppendSegment(ctx, data); err != nil {
		t.Fatal(err)
	}
	rep, err := s.GC(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range rep.Removed {
		if it.Kind == GCChangelog {
			t.Fatalf("GC removed the change log of a retained base: %+v", it)
		}
	}
	if segs, err := s.Segments(tp0.Topic, tp0.Partition, base2.ID); err != nil || len(segs) != 1 {
		t.Fatalf("segments of the retained base: %v, %v", segs, err)
	}
}

// TestChangelogGCOrphanGrace: a change log whose base is gone (removed by
// another process, or by hand) is garbage only once older than the grace
// period.
func TestChangelogGCOrphanGrace(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "ck")
	s := newStore(t, dir, Options{Mode: ModeChangelog})
	data, g := encodeSeg(t, "00000000000000000100-20260101T000000.000000000Z-abcdef", 1, 100, segBody(100, 1))
	if _, err := s.AppendSegment(ctx, data); err != nil {
		t.Fatal(err)
	}
	rep, err := s.GC(ctx, false)
	if err != nil || rep.SkippedRecent == 0 || len(rep.Removed) != 0 {
		t.Fatalf("GC of a young orphan: %+v, %v", rep, err)
	}
	chain := filepath.Join(dir, changelogDir, tp0.String(), g.Base)
	backdate(t, filepath.Join(chain, g.Name()), 2*DefaultGrace)
	backdate(t, chain, 2*DefaultGrace)
	rep, err = s.GC(ctx, false)
	if err != nil || len(rep.Removed) != 1 || rep.Removed[0].Kind != GCChangelog {
		t.Fatalf("GC of an old orphan: %+v, %v", rep, err)
	}
	if _, err := os.Stat(chain); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("orphan change log still there: %v", err)
	}
}

// TestChangelogRetention: in changelog mode retention counts recovery
// points (a base, and each segment of its chain), not bases: with
// retention 3 an older base and its log stay while the newest base has
// fewer than two segments, and go, as a segment is appended, once the
// newest base and two segments are the three newest points.
func TestChangelogRetention(t *testing.T) {
	t.Run("dir", func(t *testing.T) {
		dir := t.TempDir()
		testChangelogRetention(t, newStore(t, filepath.Join(dir, "ck"), Options{Mode: ModeChangelog, Retain: 3, Grace: -1}))
	})
	t.Run("s3", func(t *testing.T) {
		srv := s3test.Start(t)
		testChangelogRetention(t, newS3(t, srv, "clog", Options{Mode: ModeChangelog, Retain: 3, Grace: -1}))
	})
}

func testChangelogRetention(t *testing.T, s Storage) {
	ctx := context.Background()
	tmp := t.TempDir()
	db := openDB(t, filepath.Join(tmp, "live"))
	defer db.Close()
	bases := func() []string {
		metas, err := s.List(tp0.Topic, tp0.Partition)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, m := range metas {
			ids = append(ids, m.ID)
		}
		return ids
	}
	appendSeg := func(base string, seq, from int64) int64 {
		t.Helper()
		data, _ := encodeSeg(t, base, seq, from, segBody(from, 1))
		g, err := s.AppendSegment(ctx, data)
		if err != nil {
			t.Fatal(err)
		}
		return g.Last
	}
	put(t, db, 0, 100, "a", 20)
	a, _ := publishTo(t, s, tp0, 100, stage(t, db, tmp))
	pos := int64(100)
	for seq := int64(1); seq <= 4; seq++ {
		pos = appendSeg(a.ID, seq, pos)
	}
	if got := bases(); len(got) != 1 {
		t.Fatalf("bases %v: one base and its 4 segments are 5 points, all of one base", got)
	}
	put(t, db, 100, 200, "b", 20)
	b, _ := publishTo(t, s, tp0, pos, stage(t, db, tmp))
	pos = b.Offset
	pos = appendSeg(b.ID, 1, pos)
	if got := bases(); len(got) != 2 {
		t.Fatalf("bases %v after the new base and 1 segment: the old base holds the third newest point", got)
	}
	if segs, _ := s.Segments(tp0.Topic, tp0.Partition, a.ID); len(segs) != 4 {
		t.Fatalf("the retained old base has %d segments, want 4", len(segs))
	}
	appendSeg(b.ID, 2, pos)
	if got := bases(); len(got) != 1 || got[0] != b.ID {
		t.Fatalf("bases %v after the new base and 2 segments: want only %s", got, b.ID)
	}
	if segs, err := s.Segments(tp0.Topic, tp0.Partition, a.ID); err != nil || len(segs) != 0 {
		t.Fatalf("the dropped base's log: %v, %v", segs, err)
	}
	if segs, err := s.Segments(tp0.Topic, tp0.Partition, b.ID); err != nil || len(segs) != 2 {
		t.Fatalf("the retained base's log: %v, %v", segs, err)
	}
}
