//! Communicators and point-to-point messages (MPI-3.1 chapter 3, "Point-to-Point
//! Communication"; chapter 6, "Groups, Contexts, Communicators").
//!
//! Every message of a communicator travels under one transport tag of its own (its
//! *context*), with the MPI tag in a 4-byte header. Receives are matched here, as MPI-3.1
//! §3.5 requires: a receive takes the oldest message that matches its source and tag, and
//! receives posted earlier are matched first, so messages from one sender never overtake each
//! other. Sends are eager: the bytes are handed to the transport at once (the standard-mode
//! send of §3.4 may buffer), so a send completes without waiting for its receive.

use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use transport::Transport;

use crate::datatype::{bytes, bytes_mut, Equivalence};
use crate::error::{Error, Result};
use crate::request::Request;
use crate::universe::Shared;

mod lent;
mod matching;
pub(crate) use matching::header_tag;
pub(crate) use matching::Contexts;
use matching::{decode, Incoming};

/// A process's rank in a communicator, as in rsmpi and the C API (`int`).
pub type Rank = i32;
/// A message tag (`int`): `0..=`[`TAG_UB`].
pub type Tag = i32;
/// The largest tag (`MPI_TAG_UB`; MPI-3.1 §8.1.2 requires at least 32767).
pub const TAG_UB: Tag = i32::MAX;

/// `MPI_PROC_NULL` (MPI-3.1 §3.11): a rank that is no process. A send to it or a receive
/// from it completes at once and moves nothing (the receive's status says source
/// `PROC_NULL`, tag `-1` (`MPI_ANY_TAG` in C), 0 bytes: [`Status::proc_null`]); an RMA call
/// targeting it does nothing. Its value is MPICH's.
pub const PROC_NULL: Rank = -1;

/// Whom a receive accepts a message from (MPI-3.1 §3.2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// One rank.
    Rank(Rank),
    /// `MPI_ANY_SOURCE`.
    Any,
}

/// `MPI_ANY_SOURCE`.
pub const ANY_SOURCE: Source = Source::Any;

impl From<Rank> for Source {
    fn from(r: Rank) -> Self {
        Source::Rank(r)
    }
}

/// Which tags a receive accepts (MPI-3.1 §3.2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagMatch {
    /// One tag.
    Tag(Tag),
    /// `MPI_ANY_TAG`.
    Any,
}

/// `MPI_ANY_TAG`.
pub const ANY_TAG: TagMatch = TagMatch::Any;

impl From<Tag> for TagMatch {
    fn from(t: Tag) -> Self {
        TagMatch::Tag(t)
    }
}

/// What a completed receive tells: `MPI_Status` (MPI-3.1 §3.2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// `MPI_SOURCE`: the sender's rank.
    pub source: Rank,
    /// `MPI_TAG`: the message's tag.
    pub tag: Tag,
    /// Bytes received.
    pub bytes: usize,
}

impl Status {
    /// The status of a receive from [`PROC_NULL`] (MPI-3.1 §3.11): source `PROC_NULL`, tag
    /// `-1` (`MPI_ANY_TAG` in C), no bytes.
    pub fn proc_null() -> Status {
        Status {
            source: PROC_NULL,
            tag: -1,
            bytes: 0,
        }
    }

    /// `MPI_Get_count` (MPI-3.1 §3.2.5): elements of `T` received, or `None`
    /// (`MPI_UNDEFINED`) when the bytes are not a whole number of them.
    pub fn count<T: Equivalence>(&self) -> Option<usize> {
        let size = std::mem::size_of::<T>();
        self.bytes.is_multiple_of(size).then_some(self.bytes / size)
    }
}

/// First transport tag of this crate (below the runtime's reserved tags).
const BASE: u64 = 1 << 62;
/// Transport tags per communicator context.
const PER_CONTEXT: u64 = 16;
/// How long a blocked receive waits for the network (or for the thread that does) before it
/// looks at its request again: bounds how long an erroneous wait for a sender that closed in
/// order goes unnoticed.
const LISTEN_SLICE: Duration = Duration::from_millis(100);

/// How long [`Communicator::await_any`] waits before its caller polls again when the network
/// wait fails at once (a peer is lost while the receives wait for others).
const DEGRADED_SLICE: Duration = Duration::from_millis(1);

/// Transport tags of a communicator: point-to-point and one per collective kind.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Channel {
    PointToPoint = 0,
    Barrier = 1,
    Broadcast = 2,
    Reduce = 3,
    AllReduce = 4,
    Gather = 5,
    AllGather = 6,
    Scatter = 7,
    AllToAll = 8,
    WindowCreate = 9,
}

/// A communicator: a set of ranks with a private message space (MPI-3.1 §6.1). Obtained
/// from [`crate::Universe::world`] (`MPI_COMM_WORLD`), [`Communicator::dup`] or
/// [`Communicator::split`]. Cheap to clone; clones are the same communicator.
#[derive(Debug, Clone)]
pub struct Communicator {
    pub(crate) shared: Arc<Shared>,
    context: u32,
    rank: Rank,
    size: usize,
    /// The job ranks of this communicator's ranks, in rank order; `None` when they are every
    /// rank of the job in job order (the world and its duplicates).
    members: Option<Arc<[usize]>>,
}

impl Communicator {
    pub(crate) fn new(shared: Arc<Shared>, context: u32) -> Communicator {
        let rank = shared.dsm.rank() as Rank;
        let size = shared.dsm.nodes();
        Communicator {
            shared,
            context,
            rank,
            size,
            members: None,
        }
    }

    /// The transport rank (job rank) of this communicator's rank `r` (checked before).
    pub(crate) fn peer(&self, r: usize) -> transport::Rank {
        transport::Rank(self.members.as_ref().map_or(r, |m| m[r]) as u32)
    }

    /// This communicator's rank of job rank `job` (`PROC_NULL` when it is no member).
    fn rank_of_job_rank(&self, job: usize) -> Rank {
        match &self.members {
            None => job as Rank,
            Some(m) => m
                .iter()
                .position(|&x| x == job)
                .map_or(PROC_NULL, |r| r as Rank),
        }
    }

    /// The status of a message taken off the transport, with its source as a rank of this
    /// communicator.
    pub(crate) fn status_of(&self, m: &Incoming) -> Status {
        let mut st = m.status();
        st.source = self.rank_of_job_rank(st.source as usize);
        st
    }

    /// Whether this communicator has every rank of the job, in job order (the world and its
    /// duplicates), as the runtime's collective allocations need.
    pub(crate) fn is_whole_job(&self) -> bool {
        self.members.is_none()
    }

    pub(crate) fn transport(&self) -> &transport::AnyTransport {
        self.shared.dsm.node().transport()
    }

    pub(crate) fn tag(&self, ch: Channel) -> transport::Tag {
        transport::Tag(BASE + u64::from(self.context) * PER_CONTEXT + ch as u64)
    }

    /// `MPI_Comm_rank`: this process's rank.
    pub fn rank(&self) -> Rank {
        self.rank
    }

    /// `MPI_Comm_size`: the number of ranks.
    pub fn size(&self) -> Rank {
        self.size as Rank
    }

    pub(crate) fn size_usize(&self) -> usize {
        self.size
    }

    /// `MPI_Comm_dup` (MPI-3.1 §6.4.2): the same ranks, with a message space of its own, so
    /// that its messages never match this communicator's.
    ///
    /// # Collective
    /// Every rank must call it.
    ///
    /// # Errors
    /// Transport errors of the all-reduce that agrees on the new context.
    pub fn dup(&self) -> Result<Communicator> {
        let context = self.agree_context()?;
        Ok(Communicator {
            context,
            ..self.clone()
        })
    }

    /// A context none of this communicator's ranks uses yet: the highest of their proposals.
    fn agree_context(&self) -> Result<u32> {
        let mut agreed = [0u32];
        self.all_reduce(
            &[self.shared.proposed_context()],
            &mut agreed,
            crate::Op::Max,
        )?;
        self.shared.claim_context(agreed[0]);
        Ok(agreed[0])
    }

    /// `MPI_Comm_split` (MPI-3.1 §6.4.2): splits this communicator into one communicator per
    /// `color`, its ranks ordered by `key` (ties: by rank here). A rank whose `color` is
    /// `None` (`MPI_UNDEFINED`) gets `None` (`MPI_COMM_NULL`). Point-to-point calls and
    /// collectives on the new communicator use its ranks; windows need a communicator of the
    /// whole job (the runtime's collective allocations are job-wide) and refuse it.
    ///
    /// # Collective
    /// Every rank of this communicator must call it.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a negative color (the other ranks go on without this
    /// rank); transport errors of the exchange.
    pub fn split(&self, color: Option<i32>, key: i32) -> Result<Option<Communicator>> {
        let bad = color.is_some_and(|c| c < 0);
        // (color, key) of every rank; -1 for no color (undefined or invalid).
        let mine = [color.filter(|_| !bad).unwrap_or(-1), key];
        let mut all = vec![0i32; 2 * self.size];
        self.all_gather(&mine, &mut all)?;
        let context = self.agree_context()?;
        if bad {
            return Err(Error::InvalidArgument(format!(
                "color {} is negative (use None for MPI_UNDEFINED)",
                color.unwrap_or_default()
            )));
        }
        let Some(color) = color else {
            return Ok(None);
        };
        let mut ranks: Vec<usize> = (0..self.size).filter(|&r| all[2 * r] == color).collect();
        ranks.sort_by_key(|&r| (all[2 * r + 1], r));
        let members: Vec<usize> = ranks.iter().map(|&r| self.peer(r).index()).collect();
        let me = self.peer(self.rank as usize).index();
        let rank = members.iter().position(|&j| j == me).ok_or_else(|| {
            Error::InvalidArgument("this rank is missing from its own color".into())
        })? as Rank;
        let whole = members.len() == self.shared.dsm.nodes()
            && members.iter().enumerate().all(|(i, &j)| i == j);
        Ok(Some(Communicator {
            shared: Arc::clone(&self.shared),
            context,
            rank,
            size: members.len(),
            members: (!whole).then(|| members.into()),
        }))
    }

    /// Checks a rank argument.
    pub(crate) fn check_rank(&self, r: Rank) -> Result<usize> {
        usize::try_from(r)
            .ok()
            .filter(|&u| u < self.size)
            .ok_or(Error::InvalidRank {
                rank: r,
                size: self.size,
            })
    }

    fn check_tag(t: Tag) -> Result<Tag> {
        if t < 0 {
            Err(Error::InvalidTag(t))
        } else {
            Ok(t)
        }
    }

    /// `MPI_Send` (MPI-3.1 §3.2.1): sends `buf` to `dest` with `tag`. Returns once the buffer
    /// may be reused (the bytes are with the transport).
    ///
    /// A send to [`PROC_NULL`] returns at once.
    ///
    /// # Errors
    /// [`Error::InvalidRank`], [`Error::InvalidTag`]; transport errors ([`Error::PeerLost`]
    /// when `dest` is gone).
    pub fn send<T: Equivalence>(&self, buf: &[T], dest: Rank, tag: Tag) -> Result<()> {
        // The header and the caller's bytes go to the transport as they are: the tcp backend
        // writes them from here, with no copy into a frame of its own, and what a full socket
        // does not take at once is written from here too, as the socket drains, while this
        // call waits (and reads the peer's connection meanwhile, so two ranks sending to each
        // other at once both get on).
        // SAFETY: `buf` stays borrowed, so valid and unchanged, until the request is complete:
        // this waits for it.
        let sent = unsafe { self.isend_lent(bytes(buf), dest, tag)? };
        sent.wait().map(drop)
    }

    /// `MPI_Isend` for a caller that keeps the buffer valid and unchanged until the request
    /// completes, as MPI requires of a C program: what the transport cannot send at once is
    /// sent from `buf` later (no copy), and the request completes when its last byte is
    /// written. [`Communicator::isend`] copies instead, so that dropping its request (which
    /// ends the borrow) is safe.
    ///
    /// # Safety
    /// The memory of `buf` stays valid and unchanged until the returned request is complete
    /// ([`Request::wait`] or [`Request::test`] said so) or failed;
    /// the request must not be leaked or dropped before then.
    ///
    /// # Errors
    /// As [`Communicator::send`].
    pub unsafe fn isend_lent(&self, buf: &[u8], dest: Rank, tag: Tag) -> Result<Request<'static>> {
        let tag = Self::check_tag(tag)?;
        let status = Status {
            source: self.rank,
            tag,
            bytes: buf.len(),
        };
        if dest == PROC_NULL {
            return Ok(Request::completed(status));
        }
        let dest = self.check_rank(dest)?;
        // SAFETY: the caller's contract: `buf` outlives the request, which finishes with the
        // transport's completion.
        let lent = unsafe {
            self.transport().send_lent(
                self.peer(dest),
                self.tag(Channel::PointToPoint),
                &tag.to_le_bytes(),
                buf,
            )?
        };
        Ok(match lent {
            None => Request::completed(status),
            Some(done) => Request::sending(done, status),
        })
    }

    /// `MPI_Recv` (MPI-3.1 §3.2.4): receives into `buf` the oldest message from `source`
    /// with `tag` ([`ANY_SOURCE`], [`ANY_TAG`] accept any). A shorter message fills the start
    /// of `buf`; the status says how much came.
    ///
    /// # Errors
    /// [`Error::InvalidRank`], [`Error::InvalidTag`]; [`Error::Truncate`] when the message is
    /// longer than `buf` (it is consumed); [`Error::PeerLost`] when the awaited sender is gone.
    pub fn recv<T: Equivalence>(
        &self,
        buf: &mut [T],
        source: impl Into<Source>,
        tag: impl Into<TagMatch>,
    ) -> Result<Status> {
        self.irecv(buf, source, tag)?.wait()
    }

    /// `MPI_Isend` (MPI-3.1 §3.7.2). Sends are eager, so the request is complete when it is
    /// returned; it keeps `buf` borrowed until it is waited for, as MPI requires.
    ///
    /// # Errors
    /// As [`Communicator::send`].
    pub fn isend<'a, T: Equivalence>(
        &self,
        buf: &'a [T],
        dest: Rank,
        tag: Tag,
    ) -> Result<Request<'a>> {
        self.send(buf, dest, tag)?;
        Ok(Request::sent(std::mem::size_of_val(buf), self.rank, tag))
    }

    /// `MPI_Irecv` (MPI-3.1 §3.7.2): posts a receive into `buf` and returns at once. The
    /// message is matched in posting order; its bytes are copied into `buf` when the request
    /// completes ([`Request::wait`], [`Request::test`], [`crate::wait_all`]). Dropping an
    /// unfinished request cancels the receive (`MPI_Cancel`, MPI-3.1 §3.8.4) if no message
    /// matched it yet; otherwise the receive completes and its message is discarded, unread.
    /// A receive from [`PROC_NULL`]
    /// is complete at once with [`Status::proc_null`], and leaves `buf` as it is.
    ///
    /// # Errors
    /// [`Error::InvalidRank`], [`Error::InvalidTag`].
    pub fn irecv<'a, T: Equivalence>(
        &self,
        buf: &'a mut [T],
        source: impl Into<Source>,
        tag: impl Into<TagMatch>,
    ) -> Result<Request<'a>> {
        let source = source.into();
        let tag = tag.into();
        if source == Source::Rank(PROC_NULL) {
            if let TagMatch::Tag(t) = tag {
                Self::check_tag(t)?;
            }
            return Ok(Request::completed(Status::proc_null()));
        }
        // Matching is done with job ranks (as messages arrive); statuses give them back as ranks
        // of this communicator.
        let source = match source {
            Source::Rank(r) => Some(self.peer(self.check_rank(r)?).index()),
            Source::Any => None,
        };
        let tag = match tag {
            TagMatch::Tag(t) => Some(Self::check_tag(t)?),
            TagMatch::Any => None,
        };
        let id = self
            .shared
            .matching()
            .entry(self.context)
            .or_default()
            .post(source, tag);
        Ok(Request::receive(self.clone(), id, bytes_mut(buf)))
    }

    /// `MPI_Irecv` for a caller that keeps the buffer for the receive until its request
    /// completes, as MPI requires of a C program: when the next message from `source` that
    /// matches is sure to be this receive's (see `Matching::may_land`), `buf` is offered to
    /// the transport as its landing place (`Transport::land`), and the payload goes there as
    /// it arrives (over tcp a large one from the socket straight into `buf`) instead of into a
    /// buffer that the completion then copies out. Otherwise, and from any source, it is
    /// [`Communicator::irecv`].
    ///
    /// # Safety
    /// `buf` stays valid, and is not read or written by the caller, until the returned request
    /// is complete ([`Request::wait`] or [`Request::test`] said so) or failed; the request
    /// must not be leaked or dropped before then (a dropped request whose message has begun
    /// to land is still written).
    ///
    /// # Errors
    /// As [`Communicator::irecv`].
    pub unsafe fn irecv_landed(
        &self,
        buf: &'static mut [u8],
        source: impl Into<Source>,
        tag: impl Into<TagMatch>,
    ) -> Result<Request<'static>> {
        let source = source.into();
        let want = tag.into();
        let job_source = match source {
            Source::Rank(r) if r != PROC_NULL => Some(self.peer(self.check_rank(r)?).index()),
            _ => None,
        };
        let Some(from) = job_source else {
            return self.irecv(buf, source, want);
        };
        let want = match want {
            TagMatch::Tag(t) => Some(Self::check_tag(t)?),
            TagMatch::Any => None,
        };
        let tag = self.tag(Channel::PointToPoint);
        let peer = transport::Rank(from as u32);
        let mut all = self.shared.matching();
        let m = all.entry(self.context).or_default();
        if m.free_to_take(Some(from)) {
            // What has arrived from the source is matched first, in arrival order (as
            // `progress` does): a message that came before this receive was posted is older
            // than any a landing would take, and once matched it no longer keeps this and
            // later receives from landing (a window of receives posted while the first of
            // their messages arrives).
            while let Some(Ok(msg)) = self.transport().try_recv(Some(peer), Some(tag)) {
                m.deliver(decode(msg)?);
            }
        }
        if m.may_land(from, want) {
            let accept: transport::landing::Accept =
                Box::new(move |h| want.is_none_or(|t| header_tag(h) == Some(t)));
            // SAFETY: the caller keeps `buf` for this receive until its request completes,
            // which waits for the landing's completion (or withdraws it when dropped first).
            let landed = unsafe {
                self.transport()
                    .land(peer, tag, matching::HEADER, accept, buf)?
            };
            if let Some(landing) = landed {
                let source = self.rank_of_job_rank(from);
                return Ok(Request::landed(self.clone(), landing, source, buf.len()));
            }
        }
        let id = m.post(Some(from), want);
        drop(all);
        Ok(Request::receive(self.clone(), id, buf))
    }

    /// Drives matching until receive `id` has its message (`block`), or as far as messages
    /// already here allow. Returns the message when it matched.
    ///
    /// No lock is held while waiting, so a thread blocked here does not block other threads'
    /// sends and receives. A blocked thread waits for the network as the *listener* of its
    /// source ([`Transport::recv`]: it takes the first message from there), unless another
    /// thread already listens for that source or for any source; it then sleeps on the
    /// matching condition variable, which listeners signal after every arrival and when they
    /// leave. A thread takes messages only from sources nobody else listens for (under the
    /// matching lock and without waiting, [`Transport::try_recv`], or as their listener), and a
    /// listener delivers what it took before it stops listening, so the messages of one sender
    /// are matched in the order they arrived and a listener never misses its message because
    /// another thread took it.
    pub(crate) fn progress(&self, id: u64, block: bool) -> Result<Option<Incoming>> {
        let tag = self.tag(Channel::PointToPoint);
        let transport = self.transport();
        let mut all = self.shared.matching();
        loop {
            let m = all.entry(self.context).or_default();
            if let Some(done) = m.matched.remove(&id) {
                return Ok(Some(done));
            }
            let Some(source) = m.source_of(id) else {
                return Err(Error::InvalidArgument(
                    "request is neither posted nor matched".into(),
                ));
            };
            let from = source.map(|s| transport::Rank(s as u32));
            let free = m.free_to_take(source);
            if free {
                // Everything that has arrived from the source (from all when nobody listens),
                // in arrival order.
                let take = if m.listeners.is_empty() { None } else { from };
                let mut took = false;
                while let Some(got) = transport.try_recv(take, Some(tag)) {
                    match got {
                        Ok(msg) => {
                            m.deliver(decode(msg)?);
                            took = true;
                            if m.matched.contains_key(&id) {
                                // What came after it stays with the transport, in order.
                                break;
                            }
                        }
                        // A lost or closed sender ends only the receives that wait for it
                        // (and not one that has just been given its message: an any-source
                        // receive whose message came in before another peer was lost).
                        Err(e) if take.is_some() || from.is_none() => {
                            return match m.matched.remove(&id) {
                                Some(done) => Ok(Some(done)),
                                None => Err(e.into()),
                            };
                        }
                        Err(_) => break,
                    }
                }
                let woke = took && m.waiting > 0;
                if woke {
                    self.shared.progressed.notify_all();
                }
                if let Some(done) = m.matched.remove(&id) {
                    return Ok(Some(done));
                }
                if woke {
                    // What came is another thread's: let it run before this one spins on the
                    // network again (on few cores the spin kept it off the processor).
                    drop(all);
                    std::thread::yield_now();
                    all = self.shared.matching();
                    continue;
                }
                if let Some(s) = from.filter(|_| take.is_none()) {
                    // The awaited sender is gone (lost, or closed in order) and nothing of it
                    // is left: no message can come.
                    match transport.try_recv(Some(s), Some(tag)) {
                        Some(Err(e)) => return Err(e.into()),
                        // It arrived just now: match it.
                        Some(Ok(msg)) => {
                            m.deliver(decode(msg)?);
                            continue;
                        }
                        None => {}
                    }
                }
            }
            if !block {
                if !free {
                    return Ok(None);
                }
                // One look at the network, as a test must make progress.
                drop(all);
                match transport.wait_message(from, Some(tag), Some(Duration::ZERO)) {
                    Ok(()) => {}
                    Err(transport::Error::Timeout(_)) => return Ok(None),
                    Err(e) => return Err(e.into()),
                }
                all = self.shared.matching();
                continue;
            }
            if !free {
                all = self.nap(all, LISTEN_SLICE);
                continue;
            }
            m.listeners.push(source);
            drop(all);
            // The listener takes the message itself: nobody else takes from its source while
            // it listens (see `free_to_take`), so the message is matched in arrival order
            // when it is delivered below, before the listener leaves.
            let waited = transport.recv(from, Some(tag), Some(LISTEN_SLICE));
            all = self.shared.matching();
            let m = all.entry(self.context).or_default();
            let delivered = match waited {
                Ok(msg) => decode(msg).map(|msg| m.deliver(msg)),
                Err(transport::Error::Timeout(_)) => Ok(()),
                Err(e) => Err(e.into()),
            };
            if let Some(i) = m.listeners.iter().position(|l| *l == source) {
                m.listeners.swap_remove(i);
            }
            if m.waiting > 0 {
                self.shared.progressed.notify_all();
            }
            delivered?;
        }
    }

    /// Whether `other` is this communicator (or a clone of it): the same job and context.
    pub(crate) fn same_context(&self, other: &Communicator) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared) && self.context == other.context
    }

    /// Blocks until one of receives `ids` may complete, at most `slice`, without taking
    /// anything: until a message arrives for this communicator (from their source, when they
    /// all have the same), or until a thread that listens here reports one. `wait_any` polls
    /// its requests between these waits instead of spinning. Errors are left to the polls:
    /// a receive whose sender is gone reports it there; when the network wait fails at once
    /// (some peer lost, while these receives wait for others) this waits on the condition
    /// variable instead, so the caller never spins.
    pub(crate) fn await_any(&self, ids: &[u64], slice: Duration) {
        let tag = self.tag(Channel::PointToPoint);
        let mut all = self.shared.matching();
        let m = all.entry(self.context).or_default();
        if ids.iter().any(|id| m.matched.contains_key(id)) {
            return;
        }
        let mut sources = ids.iter().filter_map(|&id| m.source_of(id));
        let Some(first) = sources.next() else {
            return;
        };
        let source = if sources.all(|s| s == first) {
            first
        } else {
            None
        };
        // How long to wait for another thread's report (`None`: this thread listened).
        let mut sleep = Some(slice);
        if m.free_to_take(source) {
            m.listeners.push(source);
            drop(all);
            let from = source.map(|s| transport::Rank(s as u32));
            let waited = self.transport().wait_message(from, Some(tag), Some(slice));
            all = self.shared.matching();
            let m = all.entry(self.context).or_default();
            if let Some(i) = m.listeners.iter().position(|l| *l == source) {
                m.listeners.swap_remove(i);
            }
            if m.waiting > 0 {
                self.shared.progressed.notify_all();
            }
            sleep = match waited {
                Ok(()) | Err(transport::Error::Timeout(_)) => None,
                // Failed at once: wait a little, then poll again.
                Err(_) => Some(slice.min(DEGRADED_SLICE)),
            };
        }
        if let Some(sleep) = sleep {
            drop(self.nap(all, sleep));
        }
    }

    /// Sleeps at most `slice` on [`Shared::progressed`], counted among this context's waiters
    /// (so that a thread that delivers or listens wakes it), and returns the matching state.
    fn nap<'a>(
        &self,
        mut all: MutexGuard<'a, Contexts>,
        slice: Duration,
    ) -> MutexGuard<'a, Contexts> {
        all.entry(self.context).or_default().waiting += 1;
        let mut all = self
            .shared
            .progressed
            .wait_timeout(all, slice)
            .unwrap_or_else(|e| e.into_inner())
            .0;
        all.entry(self.context).or_default().waiting -= 1;
        all
    }

    /// Cancels receive `id` (see `Matching::cancel`); whether the cancel succeeded.
    pub(crate) fn cancel(&self, id: u64) -> bool {
        self.shared
            .matching()
            .entry(self.context)
            .or_default()
            .cancel(id)
    }

    /// `MPI_Sendrecv` (MPI-3.1 §3.10): sends `send` to `dest` and receives into `recv`.
    ///
    /// # Errors
    /// As [`Communicator::send`] and [`Communicator::recv`].
    pub fn sendrecv<T: Equivalence>(
        &self,
        send: &[T],
        dest: Rank,
        send_tag: Tag,
        recv: &mut [T],
        source: impl Into<Source>,
        recv_tag: impl Into<TagMatch>,
    ) -> Result<Status> {
        let r = self.irecv(recv, source, recv_tag)?;
        self.send(send, dest, send_tag)?;
        r.wait()
    }
}
