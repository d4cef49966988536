package checkpoint

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"go.uber.org/zap"

	"github.com/txstream/txstream/faults"
)

func changelogRel(tp TopicPartition) string { return changelogDir + "/" + tp.String() + "/" }

// AppendSegment implements Storage: one object,
// changelog/<tp>/<base>/<name>, written with If-None-Match: * (a PUT is
// atomic: the object exists whole or not at all). An existing object with
// the same bytes (the client's retry after a lost answer) is success.
func (s *S3Store) AppendSegment(ctx context.Context, data []byte) (Segment, error) {
	d, err := DecodeSegment(data)
	if err != nil {
		return Segment{}, fmt.Errorf("checkpoint: append segment: %w", err)
	}
	g := d.Segment
	tp := TopicPartition{Topic: g.Topic, Partition: g.Partition}
	rel := changelogRel(tp) + g.Base + "/" + g.Name()
	faults.Hit(faults.SegmentAppend) // crash tests: a segment encoded, not uploaded
	if err := s.putNewData(ctx, rel, data); err != nil {
		return Segment{}, fmt.Errorf("checkpoint: append segment to %s: %w", s.url(rel), err)
	}
	g.Path, g.Size = rel, int64(len(data))
	appendedSegment(ctx, s, s.log, g)
	return g, nil
}

// putNewData is putNew for binary content of any size up to a segment's.
func (s *S3Store) putNewData(ctx context.Context, rel string, data []byte) error {
	pctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	opts := minio.PutObjectOptions{ContentType: "application/octet-stream", DisableMultipart: true}
	opts.SetMatchETagExcept("*")
	_, err := s.cl.PutObject(pctx, s.bucket, s.key(rel), bytes.NewReader(data), int64(len(data)), opts)
	if err == nil || !isPreconditionFailed(err) {
		return err
	}
	if got, gerr := s.getSegment(ctx, rel); gerr == nil && bytes.Equal(got, data) {
		return nil
	}
	return fmt.Errorf("%w: %s", errExists, s.url(rel))
}

func (s *S3Store) getSegment(ctx context.Context, rel string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	obj, err := s.cl.GetObject(ctx, s.bucket, s.key(rel), minio.GetObjectOptions{})
	if err != nil {
		return nil, err
	}
	defer obj.Close()
	return readAllBounded(obj)
}

// Segments implements Storage: the segment objects of base, by sequence.
func (s *S3Store) Segments(topic string, partition int32, base string) ([]Segment, error) {
	tp := TopicPartition{Topic: topic, Partition: partition}
	if err := validateTP(tp); err != nil {
		return nil, err
	}
	if base == "" || !validFileName(base) || strings.HasPrefix(base, ".") {
		return nil, fmt.Errorf("checkpoint: invalid base id %q", base)
	}
	dir := changelogRel(tp) + base + "/"
	objs, err := s.list(context.Background(), dir, true, 0)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: list segments of %s base %s: %w", tp, base, err)
	}
	var out []Segment
	for _, o := range objs {
		rel := s.rel(o.Key)
		seq, first, last, ok := parseSegmentName(strings.TrimPrefix(rel, dir))
		if !ok {
			continue
		}
		out = append(out, Segment{Topic: topic, Partition: partition, Base: base, Seq: seq, First: first, Last: last, Size: o.Size, Path: rel})
	}
	sortSegments(out)
	return out, nil
}

// ReadSegment implements Storage: read and verify one segment. A missing
// object or bad content matches ErrCorrupt; other failures (the server
// unreachable) do not.
func (s *S3Store) ReadSegment(ctx context.Context, g Segment) (*SegmentData, error) {
	if err := g.validate(); err != nil {
		return nil, fmt.Errorf("checkpoint: read segment: %w", err)
	}
	tp := TopicPartition{Topic: g.Topic, Partition: g.Partition}
	rel := changelogRel(tp) + g.Base + "/" + g.Name()
	g.Path = rel
	data, err := s.getSegment(ctx, rel)
	if err != nil {
		if isNotFound(err) || errors.Is(err, errTooLarge) {
			return nil, fmt.Errorf("%w: segment %s: %w", ErrCorrupt, s.url(rel), err)
		}
		return nil, fmt.Errorf("checkpoint: read segment %s: %w", s.url(rel), err)
	}
	return decodeListed(data, g)
}

// gcChangelogLocked is (*Store).gcChangelogLocked for object storage: the
// objects of a change log whose base is not kept go at once when this
// run's retention dropped the base, otherwise once all are older than the
// grace period.
func (s *S3Store) gcChangelogLocked(ctx context.Context, tp TopicPartition, kept []Meta, dropped map[string]bool, now time.Time, dryRun bool, rep *GCReport) error {
	root := changelogRel(tp)
	objs, err := s.list(ctx, root, true, 0)
	if err != nil {
		return err
	}
	keep := make(map[string]bool, len(kept))
	for _, m := range kept {
		keep[m.ID] = true
	}
	type chain struct {
		objs   []minio.ObjectInfo
		newest time.Time
		bytes  int64
	}
	chains := map[string]*chain{}
	var order []string
	for _, o := range objs {
		base, _, _ := strings.Cut(strings.TrimPrefix(s.rel(o.Key), root), "/")
		c := chains[base]
		if c == nil {
			c = &chain{}
			chains[base] = c
			order = append(order, base)
		}
		c.objs = append(c.objs, o)
		c.bytes += o.Size
		if o.LastModified.After(c.newest) {
			c.newest = o.LastModified
		}
	}
	for _, base := range order {
		c := chains[base]
		if keep[base] {
			continue
		}
		if !dropped[base] && now.Sub(c.newest) < s.grace {
			rep.SkippedRecent++
			continue
		}
		rep.add(GCItem{Path: root + base, Kind: GCChangelog, Bytes: c.bytes})
		if !dryRun {
			if err := s.removeAll(ctx, c.objs); err != nil {
				return fmt.Errorf("remove change log of %s: %w", base, err)
			}
		}
		s.log.Debug("checkpoint: change log removed", zap.String("partition", tp.String()), zap.String("base", base), zap.Bool("dry_run", dryRun))
	}
	return nil
}
