package checkpoint

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
)

// Source names the input partition a snapshot's or savepoint's state was
// built from: topic and partition plus the identity of the topic
// incarnation and of the cluster. A topic that is deleted and re-created
// keeps its name but gets a new topic id; a fail-over to another cluster
// keeps topic names (and possibly offsets) but not the cluster id. Either
// way the offsets of the old state mean nothing in the new log.
//
// TopicID and ClusterID are opaque strings compared exactly: the caller
// must always use the same encoding (e.g. kadm.TopicID.String(), which is
// standard base64, or the UUID text form; not one then the other). An
// empty value means "unknown". An all-zero topic id, which brokers report
// for topics that have none, is treated as unknown too (any of the usual
// encodings: 00000000-0000-0000-0000-000000000000, 32 zeros, or
// AAAAAAAAAAAAAAAAAAAAAA with or without "==").
type Source struct {
	Topic     string
	Partition int32
	TopicID   string // Kafka topic id; empty = unknown
	ClusterID string // Kafka cluster id; empty = unknown
}

// Want selects the snapshot RestoreFrom materialises: the newest verified
// snapshot of Topic/Partition with Offset <= MaxOffset whose identity does
// not contradict TopicID and ClusterID. An empty TopicID or ClusterID is
// not checked.
type Want struct {
	Topic     string
	Partition int32
	TopicID   string
	ClusterID string
	MaxOffset int64
}

func (w Want) source() Source {
	return Source{Topic: w.Topic, Partition: w.Partition, TopicID: w.TopicID, ClusterID: w.ClusterID}
}

// Source returns the input partition and identity the snapshot records.
func (m Meta) Source() Source {
	return Source{Topic: m.Topic, Partition: m.Partition, TopicID: m.TopicID, ClusterID: m.ClusterID}
}

// Source returns the input partition and identity the savepoint partition
// records.
func (p SavepointPartition) Source() Source {
	return Source{Topic: p.Topic, Partition: p.Partition, TopicID: p.TopicID, ClusterID: p.ClusterID}
}

// ErrForeignSource is matched (errors.Is) by a *ForeignSourceError: a
// snapshot or savepoint recorded a topic id or cluster id other than the
// one expected, i.e. it was taken from another incarnation of the topic or
// from another cluster, and its offsets do not apply.
var ErrForeignSource = errors.New("checkpoint: snapshot of another topic incarnation or cluster")

// ForeignSourceError details an identity mismatch. Only ids that are set
// on both sides are compared; the error lists the ones that differ.
type ForeignSourceError struct {
	What      string // "snapshot <id>" or "savepoint <name>"
	Topic     string
	Partition int32
	Got       Source // identity recorded in the metadata
	Want      Source // identity expected by the caller
}

func (e *ForeignSourceError) Error() string {
	var diffs []string
	if idsDiffer(e.Got.TopicID, e.Want.TopicID) {
		diffs = append(diffs, fmt.Sprintf("topic id %s, expected %s", e.Got.TopicID, e.Want.TopicID))
	}
	if idsDiffer(e.Got.ClusterID, e.Want.ClusterID) {
		diffs = append(diffs, fmt.Sprintf("cluster id %s, expected %s", e.Got.ClusterID, e.Want.ClusterID))
	}
	return fmt.Sprintf("checkpoint: %s of %s-%d was taken from another topic incarnation or cluster (%s): its offsets do not apply to this log",
		e.What, e.Topic, e.Partition, strings.Join(diffs, "; "))
}

func (e *ForeignSourceError) Unwrap() error { return ErrForeignSource }

// CheckSource compares the identity recorded in a snapshot or savepoint
// (got) with the expected one (want). It returns a *ForeignSourceError
// (matching ErrForeignSource) when a topic id or cluster id is set on both
// sides and differs, and nil otherwise; an id missing on either side (for
// instance metadata written before ids were recorded) is not a mismatch.
// Topic and partition are not compared: the callers select by them.
func CheckSource(what string, got, want Source) error {
	if idsDiffer(got.TopicID, want.TopicID) || idsDiffer(got.ClusterID, want.ClusterID) {
		return &ForeignSourceError{What: what, Topic: got.Topic, Partition: got.Partition, Got: got, Want: want}
	}
	return nil
}

// uncheckedIDs names the expected ids that could not be checked because
// the metadata lacks them ("topic id", "cluster id").
func uncheckedIDs(got, want Source) []string {
	var out []string
	if normID(want.TopicID) != "" && normID(got.TopicID) == "" {
		out = append(out, "topic id")
	}
	if normID(want.ClusterID) != "" && normID(got.ClusterID) == "" {
		out = append(out, "cluster id")
	}
	return out
}

func idsDiffer(got, want string) bool {
	g, w := normID(got), normID(want)
	return g != "" && w != "" && g != w
}

// normID trims surrounding space and maps an all-zero topic id ("no id")
// to "".
func normID(id string) string {
	id = strings.TrimSpace(id)
	core := strings.TrimRight(strings.ReplaceAll(id, "-", ""), "=")
	if core != "" && (strings.Trim(core, "0") == "" || strings.Trim(core, "A") == "") {
		return ""
	}
	return id
}

// validateID rejects ids that cannot be a Kafka topic or cluster id, so
// that metadata cannot carry control characters into logs and listings.
func validateID(kind, id string) error {
	if len(id) > 128 {
		return fmt.Errorf("%s too long (%d bytes)", kind, len(id))
	}
	for _, c := range id {
		if c > unicode.MaxASCII || !unicode.IsPrint(c) || c == ' ' {
			return fmt.Errorf("invalid %s %q", kind, id)
		}
	}
	return nil
}

func validateSourceIDs(topicID, clusterID string) error {
	if err := validateID("topic id", topicID); err != nil {
		return err
	}
	return validateID("cluster id", clusterID)
}
