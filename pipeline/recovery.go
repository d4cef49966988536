package pipeline

import (
	"errors"
	"fmt"
	"sort"
)

// Errors recovery can end in. cmd/consumer words them with the flag or the
// step that gets the job going again.
var (
	// ErrStateLoss: records the state needs are gone from the log
	// (retention, DeleteRecords) and no snapshot covers them.
	ErrStateLoss = errors.New("state loss")
	// ErrOffsetsMissing: neither the group nor the progress topic knows
	// the commit point, but snapshots show the job processed the partition
	// before; starting over would output everything again.
	ErrOffsetsMissing = errors.New("committed offsets missing")
	// ErrIncompatibleState: the snapshot to restore was written with
	// settings that change the meaning of the state.
	ErrIncompatibleState = errors.New("incompatible state")
	// ErrBeyondEnd: the commit point lies past the end of the partition
	// (the log was truncated, or C belongs to another incarnation).
	ErrBeyondEnd = errors.New("commit point past the end of the log")
	// ErrForeignSource: a savepoint of another topic incarnation or cluster.
	ErrForeignSource = errors.New("savepoint of another topic incarnation or cluster")
)

// RecoveryInput is everything recovery decides from, gathered from the
// broker (group offset, progress record, log bounds, identity) and the
// checkpoint storage (snapshot list, savepoint), so that the decision is a
// pure function with a table of tests and no disk or broker.
type RecoveryInput struct {
	Partition int32
	// Group is the group's committed offset (require-stable); -1: none.
	Group int64
	// Progress is the newest progress record's commit point and history
	// start; nil: none.
	Progress *ProgressInfo
	// LogStart and LogEnd bound what the partition can still show:
	// the log start offset and the last stable offset.
	LogStart, LogEnd int64
	// TopicID and ClusterID name the input's incarnation ("" unknown).
	TopicID, ClusterID string
	Snapshots          []SnapshotCandidate
	// Savepoint is --from-savepoint's entry for this partition, if any.
	Savepoint      *SavepointCandidate
	AllowStateLoss bool
}

// ProgressInfo is the part of a progress record recovery uses.
type ProgressInfo struct {
	Next, Start int64
	TopicID     string
}

// SnapshotCandidate is a listed snapshot (not yet verified).
type SnapshotCandidate struct {
	ID                 string
	Offset             int64
	TopicID, ClusterID string
	// Incompatible says why the snapshot's settings do not match the
	// job's ("" when they do).
	Incompatible string
	// Segments are the change-log segments listed for the snapshot
	// (changelog mode: the snapshot is a base), by sequence; not yet
	// verified.
	Segments []SegmentCandidate
}

// SegmentCandidate is a listed change-log segment: applied to the state
// at First, it brings it to Last.
type SegmentCandidate struct {
	Seq         int64
	First, Last int64
}

// chain returns the segments of s that apply in order on top of it
// (sequence 1, 2, ... each starting where the previous ended) and end at
// or below resume, and why it stops before the rest ("" when nothing is
// left over or the rest only continues past a gap the log replay fills).
func (s SnapshotCandidate) chain(resume int64) ([]SegmentCandidate, string) {
	pos := s.Offset
	for i, g := range s.Segments {
		switch {
		case g.Seq != int64(i+1) || g.First != pos:
			return s.Segments[:i], fmt.Sprintf("change log of snapshot %s stops at offset %d: segment %d is missing or unusable (the next listed is %d from offset %d); replaying from there", s.ID, pos, i+1, g.Seq, g.First)
		case g.Last > resume:
			return s.Segments[:i], fmt.Sprintf("change log of snapshot %s: segment %d ends at offset %d, past the commit point %d (offsets reset below it): applying it stops at offset %d", s.ID, g.Seq, g.Last, resume, pos)
		}
		pos = g.Last
	}
	return s.Segments, ""
}

// reach is the offset the snapshot and its chain restore.
func reach(off int64, chain []SegmentCandidate) int64 {
	if len(chain) > 0 {
		return chain[len(chain)-1].Last
	}
	return off
}

// SavepointCandidate is a savepoint's entry for one partition.
type SavepointCandidate struct {
	Name               string
	Offset             int64
	TopicID, ClusterID string
	Incompatible       string
}

// RestoreKind is where a partition's state comes from.
type RestoreKind int

// Restore kinds.
const (
	RestoreEmpty RestoreKind = iota
	RestoreSnapshot
	RestoreSavepoint
)

func (k RestoreKind) String() string {
	return [...]string{"empty", "snapshot", "savepoint"}[k]
}

// Plan is a recovery decision: restore the state named by Restore, replay
// [ReplayFrom, Resume) with output suppressed, then process from Resume.
type Plan struct {
	Partition int32
	Restore   RestoreKind
	Snapshot  SnapshotCandidate   // RestoreSnapshot
	Savepoint *SavepointCandidate // RestoreSavepoint
	// Segments are the change-log segments applied, in order, on top of
	// the snapshot; ReplayFrom is then where the last one ends.
	Segments   []SegmentCandidate
	ReplayFrom int64
	Resume     int64
	// Start is where the job's history of the partition begins, carried
	// on in progress records (-1: unknown).
	Start int64
	// CFrom says where the commit point came from: "group", "progress",
	// "savepoint" or "new".
	CFrom string
	// Warnings are for the log: each is something an operator should know.
	Warnings []string
}

// PlanRecovery decides how to recover one partition:
//
//  1. C is the group's committed offset; when the group has none (expired
//     after offsets.retention.minutes, or deleted), the newest progress
//     record's. Neither, with snapshots of this job present: an error,
//     never a silent restart from the log start.
//  2. A savepoint is restored while C is unknown or not past its offset S,
//     and processing resumes at S; once the group is past S it was applied
//     already and is ignored.
//  3. Otherwise the snapshot at or below C of the same topic incarnation
//     and cluster that, with the segments of its change log (changelog
//     mode: contiguous from segment 1, each ending at or below C),
//     reaches furthest; on a tie the newest, so fewer segments are
//     applied. Without change logs this is the newest snapshot at or
//     below C. None: empty state from the history start.
//  4. Replay from the restored offset to C without output. Records the
//     replay needs that the log no longer has are state loss: an error
//     unless AllowStateLoss.
func PlanRecovery(in RecoveryInput) (Plan, error) {
	pl := Plan{Partition: in.Partition, Start: -1}
	warn := func(format string, args ...any) { pl.Warnings = append(pl.Warnings, fmt.Sprintf(format, args...)) }
	foreign := func(topicID, clusterID string) bool {
		return topicID != "" && in.TopicID != "" && topicID != in.TopicID ||
			clusterID != "" && in.ClusterID != "" && clusterID != in.ClusterID
	}

	// 1. The commit point.
	progress := in.Progress
	if progress != nil && foreign(progress.TopicID, "") {
		warn("progress record names topic id %s, the topic is now %s: ignored (the topic was re-created)", progress.TopicID, in.TopicID)
		progress = nil
	}
	c := int64(-1)
	switch {
	case in.Group >= 0:
		c, pl.CFrom = in.Group, "group"
		if progress != nil {
			pl.Start = progress.Start
			if progress.Next != in.Group {
				warn("the group's committed offset %d differs from the progress record's %d (offsets reset by an operator?): the group's wins", in.Group, progress.Next)
			}
		}
	case progress != nil:
		c, pl.CFrom, pl.Start = progress.Next, "progress", progress.Start
		warn("the group has no committed offset (expired after offsets.retention.minutes, or deleted): resuming at %d from the progress topic", c)
	}

	var own []SnapshotCandidate
	for _, s := range in.Snapshots {
		if foreign(s.TopicID, s.ClusterID) {
			warn("snapshot %s was taken from topic id %s cluster %s, not this topic %s cluster %s: skipped", s.ID, s.TopicID, s.ClusterID, in.TopicID, in.ClusterID)
			continue
		}
		own = append(own, s)
	}
	sort.Slice(own, func(i, j int) bool { return own[i].Offset > own[j].Offset })

	// 2. A savepoint.
	if sp := in.Savepoint; sp != nil {
		if foreign(sp.TopicID, sp.ClusterID) {
			return pl, fmt.Errorf("partition %d: savepoint %s was taken from topic id %s cluster %s, this is topic id %s cluster %s: %w",
				in.Partition, sp.Name, sp.TopicID, sp.ClusterID, in.TopicID, in.ClusterID, ErrForeignSource)
		}
		if c > sp.Offset {
			warn("the group is at %d, past savepoint %s (offset %d): the savepoint was applied before and is ignored; remove --from-savepoint", c, sp.Name, sp.Offset)
		} else {
			if sp.Incompatible != "" {
				return pl, fmt.Errorf("partition %d: savepoint %s: %s: %w", in.Partition, sp.Name, sp.Incompatible, ErrIncompatibleState)
			}
			if c >= 0 && c < sp.Offset {
				warn("the group's commit point %d is behind savepoint %s (offset %d): records in between are reflected in its state and are not output again", c, sp.Name, sp.Offset)
			}
			pl.Restore, pl.Savepoint, pl.CFrom = RestoreSavepoint, sp, "savepoint"
			pl.ReplayFrom, pl.Resume = sp.Offset, sp.Offset
			if err := pl.checkBounds(in, warn); err != nil {
				return pl, err
			}
			return pl, nil
		}
	}

	// C unknown: a partition new to this job, unless snapshots say it is not.
	if c < 0 {
		if len(own) > 0 {
			return pl, fmt.Errorf("partition %d: the group has no committed offset and the progress topic no record, but the checkpoint storage has a snapshot at offset %d: this job processed the partition before, and starting at the log start would output everything again: %w",
				in.Partition, own[0].Offset, ErrOffsetsMissing)
		}
		pl.CFrom = "new"
		pl.Start, pl.ReplayFrom, pl.Resume = in.LogStart, in.LogStart, in.LogStart
		return pl, nil
	}
	pl.Resume = c
	if c > in.LogEnd {
		if !in.AllowStateLoss {
			return pl, fmt.Errorf("partition %d: committed offset %d is past the partition's end %d (the log was truncated, or offsets belong to another incarnation of the topic): %w", in.Partition, c, in.LogEnd, ErrBeyondEnd)
		}
		warn("STATE LOSS allowed: committed offset %d is past the partition's end %d; resuming at %d", c, in.LogEnd, in.LogEnd)
		pl.Resume = in.LogEnd
	}

	// 3. The usable snapshot (and change log) that reaches furthest.
	best, bestReach := -1, int64(-1)
	var bestChain []SegmentCandidate
	var bestWhy string
	for i, s := range own { // newest first
		if s.Offset > pl.Resume {
			warn("snapshot %s at offset %d is past the commit point %d (offsets reset below it): skipped", s.ID, s.Offset, pl.Resume)
			continue
		}
		ch, why := s.chain(pl.Resume)
		if r := reach(s.Offset, ch); r > bestReach {
			best, bestReach, bestChain, bestWhy = i, r, ch, why
		}
	}
	if best >= 0 {
		s := own[best]
		if s.Incompatible != "" {
			return pl, fmt.Errorf("partition %d: snapshot %s: %s: %w", in.Partition, s.ID, s.Incompatible, ErrIncompatibleState)
		}
		if bestWhy != "" {
			warn("%s", bestWhy)
		}
		pl.Restore, pl.Snapshot, pl.Segments, pl.ReplayFrom = RestoreSnapshot, s, bestChain, bestReach
		return pl, pl.checkBounds(in, warn)
	}

	// No snapshot: rebuild from the start of the job's history (offset 0
	// when no progress record says where it began).
	from := pl.Start
	if from < 0 {
		from = 0
	}
	pl.ReplayFrom = from
	return pl, pl.checkBounds(in, warn)
}

// checkBounds fails a plan whose replay or resume position the log no
// longer holds, or moves it to the log start when state loss is allowed.
func (pl *Plan) checkBounds(in RecoveryInput, warn func(string, ...any)) error {
	if pl.ReplayFrom < in.LogStart && pl.ReplayFrom < pl.Resume || pl.Resume < in.LogStart {
		what := fmt.Sprintf("%s at offset %d", pl.Restore, pl.ReplayFrom)
		if pl.Restore == RestoreEmpty {
			what = fmt.Sprintf("no snapshot at or below the commit point %d; the job's history starts at %d", pl.Resume, pl.ReplayFrom)
		}
		if !in.AllowStateLoss {
			return fmt.Errorf("partition %d: %s, but the log now starts at %d: records %d..%d are gone (retention or DeleteRecords) and their effect on state cannot be rebuilt: %w",
				in.Partition, what, in.LogStart, pl.ReplayFrom, in.LogStart-1, ErrStateLoss)
		}
		warn("STATE LOSS allowed: %s, but the log starts at %d: records before it are not reflected in state", what, in.LogStart)
		pl.ReplayFrom = max(pl.ReplayFrom, in.LogStart)
		pl.Resume = max(pl.Resume, in.LogStart)
		if pl.Start >= 0 && pl.Start < in.LogStart {
			pl.Start = in.LogStart
		}
	}
	if pl.Resume > in.LogEnd && pl.Restore == RestoreSavepoint {
		return fmt.Errorf("partition %d: savepoint %s resumes at offset %d, past the partition's end %d (another topic or cluster?): %w", in.Partition, pl.Savepoint.Name, pl.Resume, in.LogEnd, ErrBeyondEnd)
	}
	return nil
}
