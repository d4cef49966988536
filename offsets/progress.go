package offsets

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/txstream/txstream/kconn"
	"go.uber.org/zap"
)

// Progress is what each epoch's transaction records for every input
// partition it advanced, on a compacted topic, besides the group's offset
// commit. Kafka deletes a group's offsets after offsets.retention.minutes
// of the group being empty (and an operator can delete them); the progress
// record survives that, so the commit point is never mistaken for "nothing
// processed yet".
type Progress struct {
	Group     string `json:"group"`
	Topic     string `json:"topic"`
	TopicID   string `json:"topic_id,omitempty"`
	Partition int32  `json:"partition"`
	// Next is the commit point C: one past the last processed record.
	Next int64 `json:"next"`
	// Start is where the job's history of this partition begins: the log
	// start offset when the job first processed it. Replaying from Start
	// with empty state rebuilds the whole state.
	Start int64 `json:"start"`
}

// ProgressKey is the compaction key of a partition's progress record.
func ProgressKey(group, topic string, p int32) []byte {
	return fmt.Appendf(nil, "%s\x00%s\x00%d", group, topic, p)
}

// Record encodes the progress record for the progress topic. Partition
// carries the input partition; ProgressPartitioner maps it.
func (pr Progress) Record(progressTopic string) *kgo.Record {
	v, _ := json.Marshal(pr) // a struct of strings and integers cannot fail
	return &kgo.Record{Topic: progressTopic, Partition: pr.Partition, Key: ProgressKey(pr.Group, pr.Topic, pr.Partition), Value: v}
}

// progressPartition is where input partition p's progress lives among n
// progress partitions. The topic is created with the input's partition
// count, so normally it is p itself.
func progressPartition(p int32, n int) int32 { return p % int32(n) }

// ProgressPartitioner partitions progress records by their input partition
// and every other topic with franz-go's default partitioner.
func ProgressPartitioner(progressTopic string) kgo.Partitioner {
	return progressPartitioner{topic: progressTopic, def: kgo.UniformBytesPartitioner(64<<10, true, true, nil)}
}

type progressPartitioner struct {
	topic string
	def   kgo.Partitioner
}

func (pp progressPartitioner) ForTopic(t string) kgo.TopicPartitioner {
	if t == pp.topic {
		return progressTopicPartitioner{}
	}
	return pp.def.ForTopic(t)
}

type progressTopicPartitioner struct{}

func (progressTopicPartitioner) RequiresConsistency(*kgo.Record) bool { return true }
func (progressTopicPartitioner) Partition(r *kgo.Record, n int) int {
	return int(progressPartition(r.Partition, n))
}

// ReadProgress returns the newest committed progress record of (group,
// topic, p), reading its progress partition from the start to the last
// stable offset (read committed). ok is false when there is none.
func ReadProgress(ctx context.Context, connOpts []kgo.Opt, progressTopic, group, topic string, p int32, log *zap.Logger) (pr Progress, ok bool, err error) {
	cl, err := kgo.NewClient(append(append([]kgo.Opt{}, connOpts...),
		kgo.WithLogger(kconn.ClientLogger(log.Named("progress-kafka"), kgo.LogLevelWarn)))...)
	if err != nil {
		return pr, false, fmt.Errorf("creating progress reader: %w", err)
	}
	defer cl.Close()
	meta := kmsg.NewPtrMetadataRequest()
	mt := kmsg.NewMetadataRequestTopic()
	mt.Topic = kmsg.StringPtr(progressTopic)
	meta.Topics = []kmsg.MetadataRequestTopic{mt}
	mresp, err := meta.RequestWith(ctx, cl)
	if err != nil {
		return pr, false, fmt.Errorf("describing progress topic %s: %w", progressTopic, err)
	}
	n := 0
	for _, t := range mresp.Topics {
		if t.Topic != nil && *t.Topic == progressTopic {
			if err := kerr.ErrorForCode(t.ErrorCode); err != nil {
				if errors.Is(err, kerr.UnknownTopicOrPartition) {
					return pr, false, nil
				}
				return pr, false, fmt.Errorf("describing progress topic %s: %w", progressTopic, err)
			}
			n = len(t.Partitions)
		}
	}
	if n == 0 {
		return pr, false, nil
	}
	pp := progressPartition(p, n)
	rd, err := kgo.NewClient(append(append([]kgo.Opt{}, connOpts...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{progressTopic: {pp: kgo.NewOffset().AtStart()}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(),
		kgo.FetchMaxWait(250*time.Millisecond),
		kgo.WithLogger(kconn.ClientLogger(log.Named("progress-kafka"), kgo.LogLevelWarn)))...)
	if err != nil {
		return pr, false, fmt.Errorf("creating progress reader: %w", err)
	}
	defer rd.Close()
	adm := kmsg.NewPtrListOffsetsRequest()
	adm.ReplicaID = -1
	adm.IsolationLevel = 1
	lt := kmsg.NewListOffsetsRequestTopic()
	lt.Topic = progressTopic
	lp := kmsg.NewListOffsetsRequestTopicPartition()
	lp.Partition = pp
	lp.Timestamp = -1
	lp.CurrentLeaderEpoch = -1
	lt.Partitions = []kmsg.ListOffsetsRequestTopicPartition{lp}
	adm.Topics = []kmsg.ListOffsetsRequestTopic{lt}
	end := int64(-1)
	for _, sh := range cl.RequestSharded(ctx, adm) {
		if sh.Err != nil {
			return pr, false, fmt.Errorf("listing end of progress partition %s/%d: %w", progressTopic, pp, sh.Err)
		}
		for _, t := range sh.Resp.(*kmsg.ListOffsetsResponse).Topics {
			for _, rp := range t.Partitions {
				if rp.Partition == pp {
					if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
						return pr, false, fmt.Errorf("listing end of progress partition %s/%d: %w", progressTopic, pp, err)
					}
					end = rp.Offset
				}
			}
		}
	}
	if end <= 0 {
		return pr, false, nil
	}
	key := string(ProgressKey(group, topic, p))
	next := int64(0)
	for next < end {
		fs := rd.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return pr, false, err
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) {
			if ferr == nil && !kerr.IsRetriable(err) {
				ferr = err
			}
		})
		if ferr != nil {
			return pr, false, fmt.Errorf("reading progress partition %s/%d: %w", progressTopic, pp, ferr)
		}
		var derr error
		fs.EachRecord(func(r *kgo.Record) {
			next = max(next, r.Offset+1)
			if r.Attrs.IsControl() || string(r.Key) != key {
				return
			}
			var v Progress
			if err := json.Unmarshal(r.Value, &v); err != nil {
				derr = fmt.Errorf("progress record %s/%d@%d: %w", progressTopic, pp, r.Offset, err)
				return
			}
			pr, ok = v, true
		})
		if derr != nil {
			return Progress{}, false, derr
		}
	}
	return pr, ok, nil
}
