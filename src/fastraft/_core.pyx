# cython: language_level=3
"""fastraft's hot path: the message type, the in-memory log, progress and quorum tracking,
proposal batching.

Nothing here touches a socket, a file or a clock; raft/core.py drives it.
"""

from cpython.bytes cimport PyBytes_GET_SIZE
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport free, malloc, qsort

ENTRY_NORMAL = 0
ENTRY_CONF_CHANGE = 1

# Message type names for Message.__repr__, registered by fastraft.raft.core, where the types are
# defined (MsgType): one definition, none repeated here.
_MSG_NAMES = {}


def register_msg_names(dict names):
    _MSG_NAMES.clear()
    _MSG_NAMES.update(names)


def msg_name(int t):
    return _MSG_NAMES.get(t, "Msg(%d)" % t)


cdef class Message:
    """One Raft message. A cdef class so that building one costs no dict."""

    def __init__(self, int type, uint64_t to, uint64_t frm, uint64_t term=0, uint64_t log_term=0,
                 uint64_t index=0, entries=(), uint64_t commit=0, bint reject=False,
                 uint64_t reject_hint=0, snapshot=None, bytes context=b""):
        self.type = type
        self.to = to
        self.frm = frm
        self.term = term
        self.log_term = log_term
        self.index = index
        self.entries = entries
        self.commit = commit
        self.reject = reject
        self.reject_hint = reject_hint
        self.snapshot = snapshot
        self.context = context

    def __repr__(self):
        return ("Message(%s %x->%x term=%d log_term=%d index=%d entries=%d commit=%d reject=%s "
                "hint=%d ctx=%r%s)" % (
                    msg_name(self.type), self.frm, self.to, self.term, self.log_term, self.index,
                    len(self.entries), self.commit, self.reject, self.reject_hint, self.context,
                    " snap@%d" % self.snapshot.index if self.snapshot is not None else ""))

    def __eq__(self, other):
        if not isinstance(other, Message):
            return NotImplemented
        cdef Message o = other
        return (self.type == o.type and self.to == o.to and self.frm == o.frm
                and self.term == o.term and self.log_term == o.log_term
                and self.index == o.index and tuple(self.entries) == tuple(o.entries)
                and self.commit == o.commit and self.reject == o.reject
                and self.reject_hint == o.reject_hint and self.snapshot == o.snapshot
                and self.context == o.context)

    def copy(self):
        return Message(self.type, self.to, self.frm, self.term, self.log_term, self.index,
                       self.entries, self.commit, self.reject, self.reject_hint, self.snapshot,
                       self.context)


# ---------------------------------------------------------------------------------------------
# The in-memory log.
#
# Entries are tuples (index, term, type, data) held in one Python list, so slicing a range for a
# follower or handing a batch to the disk is a C-level list slice, not a per-entry Python loop.
# Everything up to `offset` has been compacted into a snapshot whose last entry had `snap_term`.

cdef class Log:
    cdef public uint64_t offset       # index of the last entry covered by the snapshot
    cdef public uint64_t snap_term    # term of that entry
    cdef list ents                    # ents[i] has index offset + 1 + i
    cdef public uint64_t unstable     # first index not yet handed to the host to persist
    cdef public uint64_t stable       # last index the host has confirmed durable
    cdef public uint64_t committed
    cdef public list conf_indexes     # indexes of conf-change entries in the log, ascending

    def __init__(self, uint64_t offset=0, uint64_t snap_term=0, entries=()):
        self.offset = offset
        self.snap_term = snap_term
        self.ents = list(entries)
        self._check(self.ents, offset + 1)
        self.conf_indexes = []
        self._note_conf(self.ents)
        self.unstable = self.last_index() + 1
        self.stable = self.last_index()
        self.committed = offset

    cdef void _note_conf(self, list entries):
        # Conf changes take effect when committed; remembering where they are spares the core a
        # per-entry scan on every commit advance.
        cdef tuple e
        for e in entries:
            if e[2] != ENTRY_NORMAL:
                self.conf_indexes.append(e[0])

    cdef void _check(self, list entries, uint64_t first) except *:
        # The rest of this class reads entries with unchecked tuple casts; this is the gate that
        # makes that safe whatever a peer sent.
        cdef object e
        cdef uint64_t expect = first
        for e in entries:
            if (type(e) is not tuple or len(<tuple>e) != 4 or type((<tuple>e)[3]) is not bytes
                    or (<tuple>e)[0] != expect):
                raise ValueError("malformed entry %r (expected index %d)" % (e, expect))
            expect += 1

    cpdef uint64_t last_index(self):
        return self.offset + <uint64_t>len(self.ents)

    cpdef uint64_t first_index(self):
        return self.offset + 1

    cpdef uint64_t last_term(self):
        if self.ents:
            return (<tuple>self.ents[len(self.ents) - 1])[1]
        return self.snap_term

    cpdef uint64_t term(self, uint64_t index):
        """Term of the entry at `index`; 0 if it is compacted (below the snapshot) or absent."""
        if index == self.offset:
            return self.snap_term
        if index < self.offset or index > self.offset + <uint64_t>len(self.ents):
            return 0
        return (<tuple>self.ents[index - self.offset - 1])[1]

    cpdef bint match_term(self, uint64_t index, uint64_t term):
        if index == self.offset:
            return term == self.snap_term
        if index < self.offset or index > self.offset + <uint64_t>len(self.ents):
            return False
        return (<tuple>self.ents[index - self.offset - 1])[1] == term

    cpdef bint is_up_to_date(self, uint64_t last_index, uint64_t last_term):
        """§5.4.1: a voter refuses a candidate whose log is less up to date than its own."""
        cdef uint64_t lt = self.last_term()
        return last_term > lt or (last_term == lt and last_index >= self.last_index())

    cpdef object entry(self, uint64_t index):
        if index <= self.offset or index > self.offset + <uint64_t>len(self.ents):
            return None
        return self.ents[index - self.offset - 1]

    cpdef uint64_t append_new(self, uint64_t term, list datas, int etype=ENTRY_NORMAL):
        """The leader appends proposals as new entries of its term; returns the last index."""
        cdef uint64_t index = self.offset + <uint64_t>len(self.ents)
        cdef list ents = self.ents
        cdef object t = term
        cdef object tp = etype
        cdef object data
        for data in datas:
            if type(data) is not bytes:
                raise TypeError("entry data must be bytes, not %s" % type(data).__name__)
        for data in datas:
            index += 1
            ents.append((index, t, tp, data))
            if etype != ENTRY_NORMAL:
                self.conf_indexes.append(index)
        return index

    cpdef void append(self, list entries):
        """Append entries that continue the log exactly (index = last_index + 1 ...)."""
        if not entries:
            return
        self._check(entries, self.last_index() + 1)
        self.ents.extend(entries)
        self._note_conf(entries)

    cpdef uint64_t find_conflict(self, list entries):
        """First index in `entries` that is absent from the log or has another term; 0 if none."""
        cdef tuple e
        cdef uint64_t index
        cdef uint64_t last = self.last_index()
        for e in entries:
            index = e[0]
            if index > last:
                return index
            if index > self.offset and not self.match_term(index, e[1]):
                return index
        return 0

    cpdef void truncate_after(self, uint64_t index):
        """Drop every entry after `index` (a conflicting suffix from an old term)."""
        if index < self.committed:
            raise ValueError("truncating committed entries (%d < %d)" % (index, self.committed))
        if index < self.offset:
            index = self.offset
        del self.ents[index - self.offset:]
        while self.conf_indexes and self.conf_indexes[len(self.conf_indexes) - 1] > index:
            self.conf_indexes.pop()
        if self.unstable > index + 1:
            self.unstable = index + 1
        if self.stable > index:
            self.stable = index

    cpdef uint64_t maybe_append(self, uint64_t prev_index, uint64_t prev_term, list entries):
        """A follower's append (§5.3): returns the last index now known to match the leader's
        log, or 0 if the log does not contain prev_index at prev_term (the leader must back up)."""
        cdef uint64_t conflict, last_new
        cdef Py_ssize_t skip
        if not self.match_term(prev_index, prev_term):
            return 0
        self._check(entries, prev_index + 1)
        last_new = prev_index + <uint64_t>len(entries)
        conflict = self.find_conflict(entries)
        if conflict != 0:
            skip = <Py_ssize_t>(conflict - prev_index - 1)
            if conflict <= self.last_index():
                self.truncate_after(conflict - 1)
            new = entries[skip:] if skip else entries
            self.ents.extend(new)
            self._note_conf(new)
        return last_new

    cpdef list slice(self, uint64_t lo, uint64_t hi, Py_ssize_t max_count=0, Py_ssize_t max_bytes=0):
        """Entries [lo, hi) limited to max_count entries and about max_bytes of data (at least one
        entry is returned when the range is not empty)."""
        cdef Py_ssize_t start, stop, i, total
        cdef tuple e
        if lo <= self.offset:
            raise IndexError("entry %d is compacted (log starts at %d)" % (lo, self.offset + 1))
        if hi > self.last_index() + 1:
            hi = self.last_index() + 1
        if hi <= lo:
            return []
        start = <Py_ssize_t>(lo - self.offset - 1)
        stop = <Py_ssize_t>(hi - self.offset - 1)
        if max_count > 0 and stop - start > max_count:
            stop = start + max_count
        if max_bytes > 0:
            total = 0
            for i in range(start, stop):
                e = <tuple>self.ents[i]
                total += PyBytes_GET_SIZE(e[3]) + 24
                if total > max_bytes and i > start:
                    stop = i
                    break
        return self.ents[start:stop]

    cpdef list take_unstable(self):
        """Entries the host has not been handed yet, to persist; marks them handed out."""
        cdef uint64_t last = self.last_index()
        cdef list out
        if self.unstable > last:
            return []
        if self.unstable <= self.offset:
            self.unstable = self.offset + 1
        out = self.ents[self.unstable - self.offset - 1:]
        self.unstable = last + 1
        return out

    cpdef void stable_to(self, uint64_t index, uint64_t term):
        """The host made entries up to `index` durable. By log matching, if the entry there still
        has `term`, everything before it is what was persisted too."""
        if index > self.stable and self.match_term(index, term):
            self.stable = index

    cpdef void compact(self, uint64_t index):
        """Forget entries up to `index` (they are in a snapshot)."""
        cdef uint64_t term
        if index <= self.offset:
            return
        if index > self.last_index():
            raise ValueError("compact %d is past the last index %d" % (index, self.last_index()))
        term = self.term(index)
        del self.ents[:index - self.offset]
        while self.conf_indexes and self.conf_indexes[0] <= index:
            del self.conf_indexes[0]
        self.offset = index
        self.snap_term = term

    cpdef void restore(self, uint64_t index, uint64_t term):
        """Replace the whole log by a snapshot's position."""
        self.ents = []
        self.conf_indexes = []
        self.offset = index
        self.snap_term = term
        self.unstable = index + 1
        self.stable = index
        self.committed = index

    cpdef uint64_t find_conflict_by_term(self, uint64_t index, uint64_t term):
        """Largest i <= index whose term is <= term: where a leader may jump back to in one
        round trip instead of one index per round trip (fast backtracking)."""
        if index > self.last_index():
            index = self.last_index()
        while index > self.offset:
            if (<tuple>self.ents[index - self.offset - 1])[1] <= term:
                return index
            index -= 1
        return index

    def entries(self):
        return list(self.ents)

    def __len__(self):
        return len(self.ents)


# ---------------------------------------------------------------------------------------------
# Progress of one member as seen by the leader, and the quorum arithmetic.

PROBE = 0       # we do not know where the follower's log matches: one message at a time
REPLICATE = 1   # matching: stream appends, bounded by the in-flight window
SNAPSHOT = 2    # behind the compaction point: a snapshot is on its way


cdef class Progress:
    cdef public uint64_t match
    cdef public uint64_t next
    cdef public int state
    cdef public uint64_t pending_snapshot
    cdef public bint recent_active
    cdef public bint probe_sent
    cdef public bint is_learner
    # In-flight window: the last index of each unacknowledged append, in a ring buffer.
    cdef uint64_t* infl
    cdef int infl_cap, infl_start, infl_count

    def __cinit__(self, uint64_t match=0, uint64_t next=1, int max_inflight=256,
                  bint is_learner=False):
        if max_inflight < 1:
            max_inflight = 1
        self.infl = <uint64_t*>malloc(sizeof(uint64_t) * max_inflight)
        if self.infl == NULL:
            raise MemoryError()
        self.infl_cap = max_inflight

    def __init__(self, uint64_t match=0, uint64_t next=1, int max_inflight=256,
                 bint is_learner=False):
        self.match = match
        self.next = next
        self.state = PROBE
        self.is_learner = is_learner
        self.recent_active = False

    def __dealloc__(self):
        free(self.infl)

    cpdef void reset_state(self, int state):
        self.probe_sent = False
        self.pending_snapshot = 0
        self.state = state
        self.infl_start = 0
        self.infl_count = 0

    cpdef void become_probe(self):
        # After a snapshot, resume right after it; otherwise just past what we know matches.
        cdef uint64_t pending
        if self.state == SNAPSHOT:
            pending = self.pending_snapshot
            self.reset_state(PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self.reset_state(PROBE)
            self.next = self.match + 1

    cpdef void become_replicate(self):
        self.reset_state(REPLICATE)
        self.next = self.match + 1

    cpdef void become_snapshot(self, uint64_t index):
        self.reset_state(SNAPSHOT)
        self.pending_snapshot = index

    cpdef bint maybe_update(self, uint64_t n):
        """An ack up to n; returns whether it told us anything new."""
        cdef bint updated = False
        if self.match < n:
            self.match = n
            updated = True
            self.probe_sent = False
        if self.next < n + 1:
            self.next = n + 1
        return updated

    cpdef bint maybe_decr_to(self, uint64_t rejected, uint64_t match_hint):
        """A rejection of the append after `rejected`; returns whether next moved back."""
        if self.state == REPLICATE:
            # Stale rejection of something we already know matches.
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False   # not the probe we last sent: stale
        self.next = max(min(rejected, match_hint + 1), 1)
        self.probe_sent = False
        return True

    cpdef bint is_paused(self):
        if self.state == PROBE:
            return self.probe_sent
        if self.state == REPLICATE:
            return self.infl_count >= self.infl_cap
        return True

    cpdef void sent_entries(self, uint64_t last, Py_ssize_t count):
        """Optimistically advance `next` after sending an append ending at `last`."""
        if self.state == REPLICATE:
            if count > 0:
                self.next = last + 1
                self.infl_add(last)
        elif self.state == PROBE:
            self.probe_sent = True

    cdef void infl_add(self, uint64_t last):
        cdef int pos
        if self.infl_count >= self.infl_cap:
            return
        pos = (self.infl_start + self.infl_count) % self.infl_cap
        self.infl[pos] = last
        self.infl_count += 1

    cpdef void infl_free_le(self, uint64_t index):
        """Acknowledged up to index: every in-flight append ending at or before it is done."""
        while self.infl_count > 0 and self.infl[self.infl_start] <= index:
            self.infl_start = (self.infl_start + 1) % self.infl_cap
            self.infl_count -= 1

    cpdef void infl_free_first(self):
        """A heartbeat answer while the window is full: let one more append through."""
        if self.infl_count > 0:
            self.infl_start = (self.infl_start + 1) % self.infl_cap
            self.infl_count -= 1

    @property
    def inflight(self):
        return self.infl_count

    def __repr__(self):
        return "Progress(match=%d next=%d state=%s inflight=%d%s)" % (
            self.match, self.next, ("probe", "replicate", "snapshot")[self.state],
            self.infl_count, " learner" if self.is_learner else "")


cdef int _cmp_desc(const void* a, const void* b) noexcept nogil:
    cdef uint64_t x = (<const uint64_t*>a)[0]
    cdef uint64_t y = (<const uint64_t*>b)[0]
    return (x < y) - (x > y)



cdef class ProgressTracker:
    """Per-member progress, the voter set, and the quorum arithmetic over it."""

    cdef public dict progress      # id -> Progress (voters and learners)
    cdef public tuple voters
    cdef public tuple learners
    cdef public dict votes         # id -> granted, for the election in progress
    cdef int max_inflight

    def __init__(self, voters, learners=(), int max_inflight=256):
        self.max_inflight = max_inflight
        self.progress = {}
        self.votes = {}
        self.set_config(tuple(voters), tuple(learners), 0)

    cpdef void set_config(self, tuple voters, tuple learners, uint64_t next):
        cdef dict old = self.progress
        cdef Progress p
        self.voters = tuple(sorted(set(voters)))
        self.learners = tuple(sorted(set(learners) - set(voters)))
        self.progress = {}
        for id_ in self.voters + self.learners:
            p = old.get(id_)
            if p is None:
                p = Progress(0, next if next else 1, self.max_inflight)
            p.is_learner = id_ in self.learners
            self.progress[id_] = p

    cpdef int quorum(self):
        return len(self.voters) // 2 + 1

    cpdef uint64_t committed(self):
        """The largest index a majority of voters have (§5.3): sort the voters' match indexes in
        descending order and take the one at position quorum-1."""
        cdef Py_ssize_t n = len(self.voters)
        cdef uint64_t[16] small
        cdef uint64_t* buf = small
        cdef uint64_t result
        cdef Py_ssize_t i
        if n == 0:
            return 0
        if n > 16:
            buf = <uint64_t*>malloc(sizeof(uint64_t) * n)
            if buf == NULL:
                raise MemoryError()
        for i in range(n):
            buf[i] = (<Progress>self.progress[self.voters[i]]).match
        qsort(buf, n, sizeof(uint64_t), _cmp_desc)
        result = buf[n // 2]
        if n > 16:
            free(buf)
        return result

    cpdef void reset_votes(self):
        self.votes = {}

    cpdef void record_vote(self, uint64_t id, bint granted):
        if id not in self.votes:
            self.votes[id] = granted

    cpdef tuple tally_votes(self):
        """(granted, rejected, result) with result 1 = won, -1 = lost, 0 = pending."""
        cdef int granted = 0, rejected = 0, q = self.quorum()
        for id_ in self.voters:
            v = self.votes.get(id_)
            if v is None:
                continue
            if v:
                granted += 1
            else:
                rejected += 1
        if granted >= q:
            return granted, rejected, 1
        if rejected > len(self.voters) - q:
            return granted, rejected, -1
        return granted, rejected, 0

    cpdef void reset_recent_active(self, uint64_t self_id):
        cdef Progress p
        for id_, p in self.progress.items():
            p.recent_active = id_ == self_id


# ---------------------------------------------------------------------------------------------
# Proposal batching: the host accumulates client proposals here and hands them to the core in one
# propose_batch() call, so that one disk sync and one append message carry many of them.

cdef class ProposalBatch:
    cdef public list datas
    cdef public list waiters
    cdef public Py_ssize_t nbytes
    cdef public Py_ssize_t max_entries
    cdef public Py_ssize_t max_bytes

    def __init__(self, Py_ssize_t max_entries=4096, Py_ssize_t max_bytes=4 << 20):
        self.datas = []
        self.waiters = []
        self.nbytes = 0
        self.max_entries = max_entries
        self.max_bytes = max_bytes

    cpdef bint add(self, bytes data, object waiter=None):
        """Queue one proposal; returns True when the batch is full and should be flushed."""
        self.datas.append(data)
        self.waiters.append(waiter)
        self.nbytes += PyBytes_GET_SIZE(data)
        return len(self.datas) >= self.max_entries or self.nbytes >= self.max_bytes

    cpdef tuple take(self):
        """(datas, waiters) accumulated so far; the batch is empty afterwards."""
        cdef tuple out = (self.datas, self.waiters)
        self.datas = []
        self.waiters = []
        self.nbytes = 0
        return out

    def __len__(self):
        return len(self.datas)
