package checkpoint

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"
	"go.uber.org/zap"

	"github.com/txstream/txstream/faults"
)

// Change log (ModeChangelog). A base is a snapshot published as in
// incremental mode; after it, the state changes of each committed epoch
// are appended to the partition's change log in segments:
//
//	changelog/<topic>-<partition>/<base-id>/<seq>-<first>-<last>.seg
//
// seq counts from 1 after the base, first is the position the segment
// starts from (the base's offset for seq 1, the previous segment's last
// otherwise) and last the position after its last epoch, all zero-padded
// decimals (10, 20 and 20 digits) so that names sort by sequence. A
// segment is self-describing and checksummed:
//
//	"TXCLSEG1"                 magic and format version (8 bytes)
//	u32 big endian             length H of the header (at most 64 KiB)
//	H bytes                    header, JSON: topic, partition, base, seq, first, last, epochs, changes, created_at,
//	                           compression ("zstd" or absent), body_bytes (the body's size uncompressed)
//	body                       records (header without "body"), zstd-compressed or not:
//	                                    'S' uvarint(len k) k uvarint(len v) v   a key set
//	                                    'D' uvarint(len k) k                     a key deleted
//	                                    'E' uvarint(position)                    end of an epoch: the changes
//	                                                                             before it bring the state to position
//	                           or a table (header "body": "table"): a Pebble sstable holding the
//	                           segment's net changes (each key's last set or delete), which a
//	                           restore ingests as it is
//	u32 big endian             CRC-32C (Castagnoli) of everything before it
//
// The engine writes tables: a restore then links each segment into the
// store instead of sorting and rewriting its changes, so restoring a base
// and its log costs about what restoring the base alone does. Records are
// read for segments written that way and by tools.
// Restore is the base plus its segments in sequence order, as long as they
// are contiguous and verify; the input replay covers the rest.

const (
	changelogDir   = "changelog"
	segmentMagic   = "TXCLSEG1"
	segmentSuffix  = ".seg"
	maxSegHeader   = 64 << 10
	maxSegmentSize = 256 << 20
	maxBodyBytes   = 256 << 20 // uncompressed
	compressZstd   = "zstd"
	// BodyTable marks a segment whose body is a Pebble sstable.
	BodyTable = "table"
)

var (
	zstdOnce sync.Once
	zstdEnc  *zstd.Encoder
	zstdDec  *zstd.Decoder
	zstdErr  error
)

// zstdCodec returns the shared encoder and decoder (EncodeAll and
// DecodeAll are safe for concurrent use).
func zstdCodec() (*zstd.Encoder, *zstd.Decoder, error) {
	zstdOnce.Do(func() {
		if zstdEnc, zstdErr = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1)); zstdErr != nil {
			return
		}
		zstdDec, zstdErr = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(maxBodyBytes))
	})
	return zstdEnc, zstdDec, zstdErr
}

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Record kinds of a segment body.
const (
	ChangeSet      byte = 'S' // a key set to a value
	ChangeDelete   byte = 'D' // a key deleted
	ChangeEpochEnd byte = 'E' // end of an epoch: the state reflects every record below the position
)

// Segment describes one change-log segment: its header, and where it is
// stored when listed.
type Segment struct {
	Topic     string    `json:"topic"`
	Partition int32     `json:"partition"`
	Base      string    `json:"base"`  // id of the base snapshot the segment follows
	Seq       int64     `json:"seq"`   // 1 for the first segment after the base
	First     int64     `json:"first"` // position the segment starts from
	Last      int64     `json:"last"`  // position after its last epoch
	Epochs    int       `json:"epochs"`
	Changes   int       `json:"changes"`
	CreatedAt time.Time `json:"created_at"`
	// Compression of the body ("zstd", or "" for none) and its size
	// uncompressed.
	Compression string `json:"compression,omitempty"`
	BodyBytes   int64  `json:"body_bytes"`
	// Body is "" for records, BodyTable for a table.
	Body string `json:"body,omitempty"`
	// Size (bytes stored) and Path (relative to the storage location) are
	// filled by Segments; Epochs, Changes and CreatedAt only by a read.
	Size int64  `json:"-"`
	Path string `json:"-"`
}

// Name is the segment's file or object name.
func (g Segment) Name() string {
	return fmt.Sprintf("%010d-%020d-%020d%s", g.Seq, g.First, g.Last, segmentSuffix)
}

// parseSegmentName parses <seq>-<first>-<last>.seg.
func parseSegmentName(name string) (seq, first, last int64, ok bool) {
	s, ok := strings.CutSuffix(name, segmentSuffix)
	if !ok || len(s) != 10+1+20+1+20 || s[10] != '-' || s[31] != '-' {
		return 0, 0, 0, false
	}
	var err error
	if seq, err = strconv.ParseInt(s[:10], 10, 64); err != nil || seq < 1 {
		return 0, 0, 0, false
	}
	if first, err = strconv.ParseInt(s[11:31], 10, 64); err != nil || first < 0 {
		return 0, 0, 0, false
	}
	if last, err = strconv.ParseInt(s[32:], 10, 64); err != nil || last < first {
		return 0, 0, 0, false
	}
	return seq, first, last, true
}

func (g Segment) validate() error {
	tp := TopicPartition{Topic: g.Topic, Partition: g.Partition}
	if err := validateTP(tp); err != nil {
		return err
	}
	if g.Base == "" || !validFileName(g.Base) || strings.HasPrefix(g.Base, ".") {
		return fmt.Errorf("invalid base id %q", g.Base)
	}
	if g.Seq < 1 || g.First < 0 || g.Last < g.First {
		return fmt.Errorf("invalid sequence %d or positions %d..%d", g.Seq, g.First, g.Last)
	}
	return nil
}

// ChangeBuffer accumulates committed epochs' changes in the segment body
// encoding. Not safe for concurrent use.
type ChangeBuffer struct {
	buf     []byte
	epochs  int
	changes int
	last    int64
}

// Set records key set to value.
func (b *ChangeBuffer) Set(key, value []byte) {
	b.buf = append(b.buf, ChangeSet)
	b.buf = binary.AppendUvarint(b.buf, uint64(len(key)))
	b.buf = append(b.buf, key...)
	b.buf = binary.AppendUvarint(b.buf, uint64(len(value)))
	b.buf = append(b.buf, value...)
	b.changes++
}

// Delete records key deleted.
func (b *ChangeBuffer) Delete(key []byte) {
	b.buf = append(b.buf, ChangeDelete)
	b.buf = binary.AppendUvarint(b.buf, uint64(len(key)))
	b.buf = append(b.buf, key...)
	b.changes++
}

// EndEpoch closes the changes recorded since the previous EndEpoch: with
// them the state reflects every record below position.
func (b *ChangeBuffer) EndEpoch(position int64) {
	b.buf = append(b.buf, ChangeEpochEnd)
	b.buf = binary.AppendUvarint(b.buf, uint64(position))
	b.epochs++
	b.last = position
}

// Len is the encoded size in bytes.
func (b *ChangeBuffer) Len() int { return len(b.buf) }

// Changes is the number of sets and deletes recorded.
func (b *ChangeBuffer) Changes() int { return b.changes }

// Epochs is the number of epochs ended.
func (b *ChangeBuffer) Epochs() int { return b.epochs }

// Last is the position of the last epoch ended.
func (b *ChangeBuffer) Last() int64 { return b.last }

// Append moves o's epochs after b's (o must hold only ended epochs) and
// empties o.
func (b *ChangeBuffer) Append(o *ChangeBuffer) {
	if o.epochs == 0 {
		return
	}
	b.buf = append(b.buf, o.buf...)
	b.epochs += o.epochs
	b.changes += o.changes
	b.last = o.last
	o.Reset()
}

// Each calls fn for every record in order, like SegmentData.Each.
func (b *ChangeBuffer) Each(fn func(kind byte, key, value []byte, pos int64) error) error {
	return walkBody(b.buf, fn)
}

// Reset empties the buffer, keeping its memory.
func (b *ChangeBuffer) Reset() {
	b.buf = b.buf[:0]
	b.epochs, b.changes, b.last = 0, 0, 0
}

// EncodeSegment encodes the epochs of body as segment seg, its body
// compressed with zstd (seg.Epochs, Changes, Last, Compression and
// BodyBytes are taken from body; CreatedAt is set when zero). body must
// hold at least one ended epoch and only ended epochs; it is only read.
func EncodeSegment(seg Segment, body *ChangeBuffer) ([]byte, Segment, error) {
	seg.Epochs, seg.Changes, seg.Last = body.epochs, body.changes, body.last
	seg.Compression, seg.BodyBytes = compressZstd, int64(len(body.buf))
	if seg.CreatedAt.IsZero() {
		seg.CreatedAt = time.Now().UTC()
	}
	if body.epochs == 0 || len(body.buf) == 0 || body.buf[len(body.buf)-1-uvarintLen(uint64(body.last))] != ChangeEpochEnd {
		return nil, seg, errors.New("checkpoint: encode segment: no ended epoch")
	}
	if err := seg.validate(); err != nil {
		return nil, seg, fmt.Errorf("checkpoint: encode segment: %w", err)
	}
	h, err := json.Marshal(seg)
	if err != nil {
		return nil, seg, err
	}
	enc, _, err := zstdCodec()
	if err != nil {
		return nil, seg, fmt.Errorf("checkpoint: encode segment: %w", err)
	}
	out := make([]byte, 0, len(segmentMagic)+4+len(h)+len(body.buf)/2+4)
	out = append(out, segmentMagic...)
	out = binary.BigEndian.AppendUint32(out, uint32(len(h)))
	out = append(out, h...)
	out = enc.EncodeAll(body.buf, out)
	out = binary.BigEndian.AppendUint32(out, crc32.Checksum(out, crcTable))
	if len(out) > maxSegmentSize {
		return nil, seg, fmt.Errorf("checkpoint: encode segment: %d bytes, more than %d", len(out), maxSegmentSize)
	}
	seg.Size = int64(len(out))
	return out, seg, nil
}

// EncodeTableSegment encodes the epochs of body as segment seg whose body
// is table, a Pebble sstable of body's net changes that the caller built
// (seg's counts and positions are taken from body, as in EncodeSegment).
func EncodeTableSegment(seg Segment, body *ChangeBuffer, table []byte) ([]byte, Segment, error) {
	seg.Epochs, seg.Changes, seg.Last = body.epochs, body.changes, body.last
	seg.Compression, seg.BodyBytes, seg.Body = "", int64(len(table)), BodyTable
	if seg.CreatedAt.IsZero() {
		seg.CreatedAt = time.Now().UTC()
	}
	if body.epochs == 0 || len(table) == 0 {
		return nil, seg, errors.New("checkpoint: encode segment: no ended epoch")
	}
	if err := seg.validate(); err != nil {
		return nil, seg, fmt.Errorf("checkpoint: encode segment: %w", err)
	}
	h, err := json.Marshal(seg)
	if err != nil {
		return nil, seg, err
	}
	out := make([]byte, 0, len(segmentMagic)+4+len(h)+len(table)+4)
	out = append(out, segmentMagic...)
	out = binary.BigEndian.AppendUint32(out, uint32(len(h)))
	out = append(out, h...)
	out = append(out, table...)
	out = binary.BigEndian.AppendUint32(out, crc32.Checksum(out, crcTable))
	if len(out) > maxSegmentSize {
		return nil, seg, fmt.Errorf("checkpoint: encode segment: %d bytes, more than %d", len(out), maxSegmentSize)
	}
	seg.Size = int64(len(out))
	return out, seg, nil
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// SegmentData is a decoded, verified segment.
type SegmentData struct {
	Segment
	body []byte
}

// DecodeSegment checks a segment's magic, checksum, header and body
// structure (record kinds, lengths, non-decreasing positions within
// [first, last], counts). Every failure matches ErrCorrupt.
func DecodeSegment(data []byte) (*SegmentData, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: segment: %s", ErrCorrupt, fmt.Sprintf(format, args...))
	}
	if len(data) < len(segmentMagic)+4+4 {
		return nil, bad("%d bytes, too short", len(data))
	}
	if string(data[:len(segmentMagic)]) != segmentMagic {
		return nil, bad("bad magic %q", data[:len(segmentMagic)])
	}
	n := len(data) - 4
	if got, want := crc32.Checksum(data[:n], crcTable), binary.BigEndian.Uint32(data[n:]); got != want {
		return nil, bad("crc32c %08x, want %08x", got, want)
	}
	p := len(segmentMagic)
	hl := int(binary.BigEndian.Uint32(data[p:]))
	p += 4
	if hl > maxSegHeader || p+hl > n {
		return nil, bad("header length %d out of bounds", hl)
	}
	var sd SegmentData
	if err := json.Unmarshal(data[p:p+hl], &sd.Segment); err != nil {
		return nil, bad("header: %v", err)
	}
	if err := sd.validate(); err != nil {
		return nil, bad("header: %v", err)
	}
	sd.body = data[p+hl : n]
	switch sd.Body {
	case "":
	case BodyTable:
		// The table's blocks carry their own checksums, which Pebble
		// checks as it reads them; the segment's CRC covers it whole.
		if sd.Compression != "" || sd.BodyBytes != int64(len(sd.body)) || len(sd.body) == 0 {
			return nil, bad("table body of %d bytes, header says %d (compression %q)", len(sd.body), sd.BodyBytes, sd.Compression)
		}
		if sd.Epochs < 1 || sd.Changes < 1 {
			return nil, bad("table segment with %d epochs and %d changes", sd.Epochs, sd.Changes)
		}
		sd.Size = int64(len(data))
		return &sd, nil
	default:
		return nil, bad("unknown body %q", sd.Body)
	}
	switch sd.Compression {
	case "":
		if sd.BodyBytes != int64(len(sd.body)) {
			return nil, bad("body has %d bytes, header says %d", len(sd.body), sd.BodyBytes)
		}
	case compressZstd:
		if sd.BodyBytes < 0 || sd.BodyBytes > maxBodyBytes {
			return nil, bad("uncompressed body size %d out of bounds", sd.BodyBytes)
		}
		_, dec, err := zstdCodec()
		if err != nil {
			return nil, err
		}
		raw, err := dec.DecodeAll(sd.body, nil)
		if err != nil || int64(len(raw)) != sd.BodyBytes {
			return nil, bad("body does not decompress to %d bytes (%d, %v)", sd.BodyBytes, len(raw), err)
		}
		sd.body = raw
	default:
		return nil, bad("unknown compression %q", sd.Compression)
	}
	sd.Size = int64(len(data))
	epochs, changes, last := 0, 0, sd.First
	err := walkBody(sd.body, func(kind byte, _, _ []byte, pos int64) error {
		if kind != ChangeEpochEnd {
			changes++
			return nil
		}
		if pos < last || pos > sd.Last {
			return fmt.Errorf("epoch position %d outside [%d, %d]", pos, last, sd.Last)
		}
		epochs++
		last = pos
		return nil
	})
	if err != nil {
		return nil, bad("%v", err)
	}
	if epochs != sd.Epochs || changes != sd.Changes || last != sd.Last {
		return nil, bad("body has %d epochs %d changes ending at %d, header says %d, %d, %d", epochs, changes, last, sd.Epochs, sd.Changes, sd.Last)
	}
	return &sd, nil
}

// walkBody calls fn for each record; a body that does not end with an
// epoch end is an error.
func walkBody(b []byte, fn func(kind byte, key, value []byte, pos int64) error) error {
	field := func() ([]byte, error) {
		l, n := binary.Uvarint(b)
		if n <= 0 || l > uint64(len(b)-n) {
			return nil, errors.New("truncated record")
		}
		v := b[n : n+int(l)]
		b = b[n+int(l):]
		return v, nil
	}
	open := false
	for len(b) > 0 {
		kind := b[0]
		b = b[1:]
		switch kind {
		case ChangeSet:
			k, err := field()
			if err != nil {
				return err
			}
			v, err := field()
			if err != nil {
				return err
			}
			if err := fn(kind, k, v, 0); err != nil {
				return err
			}
			open = true
		case ChangeDelete:
			k, err := field()
			if err != nil {
				return err
			}
			if err := fn(kind, k, nil, 0); err != nil {
				return err
			}
			open = true
		case ChangeEpochEnd:
			v, n := binary.Uvarint(b)
			if n <= 0 || v > 1<<62 {
				return errors.New("truncated epoch end")
			}
			b = b[n:]
			if err := fn(kind, nil, nil, int64(v)); err != nil {
				return err
			}
			open = false
		default:
			return fmt.Errorf("unknown record kind 0x%02x", kind)
		}
	}
	if open {
		return errors.New("changes after the last epoch end")
	}
	return nil
}

// Each calls fn for every record of the segment in order: a set (value
// non-nil, possibly empty), a delete (kind ChangeDelete) or an epoch end
// with its position. key and value alias the segment's memory. A table
// segment has no records: read Table instead.
func (d *SegmentData) Each(fn func(kind byte, key, value []byte, pos int64) error) error {
	if d.Body == BodyTable {
		return fmt.Errorf("segment %d of base %s holds a table, not records", d.Seq, d.Base)
	}
	return walkBody(d.body, fn)
}

// Table returns a table segment's sstable (nil for a records segment). It
// aliases the segment's memory.
func (d *SegmentData) Table() []byte {
	if d.Body != BodyTable {
		return nil
	}
	return d.body
}

// checkListed reports a segment whose header does not match the name it
// is stored under.
func (d *SegmentData) checkListed(g Segment) error {
	if d.Topic != g.Topic || d.Partition != g.Partition || d.Base != g.Base || d.Seq != g.Seq || d.First != g.First || d.Last != g.Last {
		return fmt.Errorf("%w: segment %s: header says %s-%d base %s seq %d positions %d..%d", ErrCorrupt, g.Path,
			d.Topic, d.Partition, d.Base, d.Seq, d.First, d.Last)
	}
	return nil
}

// sortSegments orders by sequence, then first position.
func sortSegments(segs []Segment) {
	sort.Slice(segs, func(i, j int) bool {
		if segs[i].Seq != segs[j].Seq {
			return segs[i].Seq < segs[j].Seq
		}
		return segs[i].First < segs[j].First
	})
}

// Chain returns the prefix of segs (sorted by sequence) that continues
// base offset contiguously: sequence 1, 2, ... with each segment's first
// position equal to the previous one's last (the base's offset for the
// first).
func Chain(baseOffset int64, segs []Segment) []Segment {
	pos := baseOffset
	for i, g := range segs {
		if g.Seq != int64(i+1) || g.First != pos {
			return segs[:i]
		}
		pos = g.Last
	}
	return segs
}

func (s *Store) changelogDir(tp TopicPartition) string {
	return filepath.Join(s.dir, changelogDir, tp.String())
}

// AppendSegment implements Storage: it stores data (EncodeSegment's
// output) as changelog/<tp>/<base>/<name> through a temporary file,
// fsync, rename and an fsync of the directory. A segment that already
// exists with the same bytes (a retry) is success; with other bytes an
// error.
func (s *Store) AppendSegment(ctx context.Context, data []byte) (Segment, error) {
	d, err := DecodeSegment(data)
	if err != nil {
		return Segment{}, fmt.Errorf("checkpoint: append segment: %w", err)
	}
	g := d.Segment
	tp := TopicPartition{Topic: g.Topic, Partition: g.Partition}
	dir := filepath.Join(s.changelogDir(tp), g.Base)
	if err := ctx.Err(); err != nil {
		return Segment{}, err
	}
	if err := ensureDir(dir); err != nil {
		return Segment{}, fmt.Errorf("checkpoint: append segment %s/%s: %w", tp, g.Name(), err)
	}
	final := filepath.Join(dir, g.Name())
	if old, err := os.ReadFile(final); err == nil {
		if bytes.Equal(old, data) {
			return s.listed(g, final), nil
		}
		return Segment{}, fmt.Errorf("checkpoint: append segment %s/%s: a different segment exists under that name", tp, g.Name())
	}
	tmp := filepath.Join(dir, tmpPrefix+g.Name()+"-"+randSuffix())
	if err := writeFileSync(tmp, data); err != nil {
		return Segment{}, fmt.Errorf("checkpoint: append segment %s/%s: %w", tp, g.Name(), err)
	}
	faults.Hit(faults.SegmentAppend) // crash tests: a segment written, not published
	if err := os.Rename(tmp, final); err != nil {
		os.Remove(tmp)
		return Segment{}, fmt.Errorf("checkpoint: append segment %s/%s: %w", tp, g.Name(), err)
	}
	if err := syncDir(dir); err != nil {
		return Segment{}, fmt.Errorf("checkpoint: append segment %s/%s: %w", tp, g.Name(), err)
	}
	appendedSegment(ctx, s, s.log, g)
	return s.listed(g, final), nil
}

func (s *Store) listed(g Segment, path string) Segment {
	g.Path = s.rel(path)
	if info, err := os.Stat(path); err == nil {
		g.Size = info.Size()
	}
	return g
}

// Segments implements Storage: the segments stored for base of one
// partition, by sequence (names parsed, contents not read). Temporary and
// unparseable entries are left out.
func (s *Store) Segments(topic string, partition int32, base string) ([]Segment, error) {
	tp := TopicPartition{Topic: topic, Partition: partition}
	if err := validateTP(tp); err != nil {
		return nil, err
	}
	if base == "" || !validFileName(base) || strings.HasPrefix(base, ".") {
		return nil, fmt.Errorf("checkpoint: invalid base id %q", base)
	}
	dir := filepath.Join(s.changelogDir(tp), base)
	ents, err := readDirIfExists(dir)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: list segments of %s base %s: %w", tp, base, err)
	}
	var out []Segment
	for _, e := range ents {
		seq, first, last, ok := parseSegmentName(e.Name())
		if !ok || !e.Type().IsRegular() {
			continue
		}
		g := Segment{Topic: topic, Partition: partition, Base: base, Seq: seq, First: first, Last: last,
			Path: s.rel(filepath.Join(dir, e.Name()))}
		if info, err := e.Info(); err == nil {
			g.Size = info.Size()
		}
		out = append(out, g)
	}
	sortSegments(out)
	return out, nil
}

// ReadSegment implements Storage: it reads g and verifies its checksum,
// structure and that its header matches g. A missing, truncated or
// corrupt segment matches ErrCorrupt.
func (s *Store) ReadSegment(ctx context.Context, g Segment) (*SegmentData, error) {
	if err := g.validate(); err != nil {
		return nil, fmt.Errorf("checkpoint: read segment: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	tp := TopicPartition{Topic: g.Topic, Partition: g.Partition}
	p := filepath.Join(s.changelogDir(tp), g.Base, g.Name())
	g.Path = s.rel(p)
	data, err := readBounded(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, errTooLarge) {
			return nil, fmt.Errorf("%w: segment %s: %w", ErrCorrupt, g.Path, err)
		}
		return nil, fmt.Errorf("checkpoint: read segment %s: %w", g.Path, err)
	}
	return decodeListed(data, g)
}

func decodeListed(data []byte, g Segment) (*SegmentData, error) {
	d, err := DecodeSegment(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", g.Path, err)
	}
	if err := d.checkListed(g); err != nil {
		return nil, err
	}
	d.Path = g.Path
	return d, nil
}

var errTooLarge = errors.New("larger than a segment can be")

func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readAllBounded(f)
}

func readAllBounded(r io.Reader) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxSegmentSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxSegmentSize {
		return nil, fmt.Errorf("%w (%d bytes)", errTooLarge, maxSegmentSize)
	}
	return b, nil
}

// gcChangelogLocked removes the change logs of tp whose base is not in
// kept: at once for a base dropped by this run's retention (dropped),
// otherwise (a base removed elsewhere, by hand) once every file is older
// than the grace period; and temporary files older than the grace period.
func (s *Store) gcChangelogLocked(tp TopicPartition, kept []Meta, dropped map[string]bool, now time.Time, dryRun bool, rep *GCReport) error {
	root := s.changelogDir(tp)
	ents, err := readDirIfExists(root)
	if err != nil {
		return err
	}
	keep := make(map[string]bool, len(kept))
	for _, m := range kept {
		keep[m.ID] = true
	}
	for _, e := range ents {
		name, p := e.Name(), filepath.Join(root, e.Name())
		info, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if strings.HasPrefix(name, tmpPrefix) {
			if err := s.removeTemp(tempEntry{name: name, path: p, mtime: info.ModTime()}, now, dryRun, rep); err != nil {
				return err
			}
			continue
		}
		if keep[name] {
			if err := s.gcTemps(p, now, dryRun, rep); err != nil {
				return err
			}
			continue
		}
		if !dropped[name] && now.Sub(newestMtime(p, info.ModTime())) < s.grace {
			rep.SkippedRecent++
			continue
		}
		it := GCItem{Path: s.rel(p), Kind: GCChangelog, Bytes: diskUsage(p)}
		if !dryRun {
			if err := removeDirDurably(p); err != nil {
				return fmt.Errorf("remove change log of %s: %w", name, err)
			}
		}
		rep.add(it)
		s.log.Debug("checkpoint: change log removed", zap.String("partition", tp.String()), zap.String("base", name), zap.Bool("dry_run", dryRun))
	}
	return nil
}

// newestMtime is the newest modification time of dir and its entries.
func newestMtime(dir string, t time.Time) time.Time {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if info, err := e.Info(); err == nil && info.ModTime().After(t) {
			t = info.ModTime()
		}
	}
	return t
}
