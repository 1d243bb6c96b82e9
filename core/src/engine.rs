//! The merges: policy-driven deep merge, RFC 7396 merge patch, and the
//! merge-patch diff, all on binary jsonb.
//!
//! Objects are merged by walking both sorted key lists together (jsonb keeps
//! keys sorted, so the output needs no sort) and every subtree that only one
//! side has, or that the policy keeps whole, is copied byte for byte. Only
//! the paths where both sides hold objects (or arrays under a non-replace
//! mode) are rebuilt, so a merge costs about the size of the output plus the
//! size of the patch — never a decode of untouched data.

use super::jsonb::{
    key_cmp, Container, FormatError, Item, Kind, Open, Pairs, Value, WriteError, Writer,
    EMPTY_OBJECT, T_NULL, T_TRUE,
};
use super::numeric;
use super::policy::{ArrayMode, NullMode, Policy, ValueRule};
use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

/// Default for the nesting limit (the `syncguard.max_merge_depth` GUC).
pub const DEFAULT_MAX_DEPTH: usize = 1000;

/// Levels between stack checks. A level uses under 500 bytes of stack, and the
/// server keeps `max_stack_depth` well below the real limit, so checking
/// every 16th level is as safe as checking each one and keeps the check off
/// the path of shallow documents.
const STACK_CHECK_EVERY: usize = 16;

/// How deep a walk may go. The depth limit is the documented one; the stack
/// check is the server's own (`stack_is_too_deep`), so no setting of the
/// limit can overflow the stack, whatever the build's frame sizes.
#[derive(Clone, Copy)]
pub struct Limits {
    /// Containers walked, the root counting as level 1.
    pub max_depth: usize,
    pub stack_too_deep: fn() -> bool,
}

impl Limits {
    /// A depth limit alone (pure-Rust callers, whose inputs are bounded).
    pub fn depth(max_depth: usize) -> Self {
        Limits {
            max_depth,
            stack_too_deep: || false,
        }
    }

    fn check(&self, depth: usize) -> Result<(), MergeError> {
        if depth > self.max_depth {
            Err(MergeError::TooDeep {
                limit: self.max_depth,
            })
        } else if depth % STACK_CHECK_EVERY == 0 && (self.stack_too_deep)() {
            Err(MergeError::StackTooDeep)
        } else {
            Ok(())
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeError {
    /// An input is not well-formed binary jsonb.
    Format,
    /// The merge would walk deeper than the configured limit.
    TooDeep {
        limit: usize,
    },
    /// The server's stack limit (`max_stack_depth`) would be exceeded first.
    StackTooDeep,
    /// The result exceeds jsonb's 256 MB container limit.
    TooLarge,
    TooManyElements,
}

impl From<FormatError> for MergeError {
    fn from(_: FormatError) -> Self {
        MergeError::Format
    }
}

impl From<WriteError> for MergeError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::TooLarge => MergeError::TooLarge,
            WriteError::TooManyElements => MergeError::TooManyElements,
        }
    }
}

thread_local! {
    /// The output buffer of the last merge, handed back with [`recycle`]: a
    /// backend merging row after row reuses one allocation instead of
    /// allocating (and, for large documents, page-faulting) a fresh one.
    static OUTPUT_BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Buffers larger than this are freed rather than kept between calls.
const KEEP_BUFFER_UP_TO: usize = 4 << 20;

/// Returns a [`Merged::Built`] buffer once its bytes have been copied out.
pub fn recycle(buf: Vec<u8>) {
    if buf.capacity() <= KEEP_BUFFER_UP_TO {
        OUTPUT_BUFFER.with_borrow_mut(|b| *b = buf);
    }
}

/// A merge result. Often the result is one input unchanged; saying so lets
/// the caller hand back the input datum without copying it.
#[derive(Debug, PartialEq, Eq)]
pub enum Merged {
    Target,
    Patch,
    /// A new datum; its first 4 bytes are reserved for the varlena header.
    Built(Vec<u8>),
    /// The patch was a tombstone: no document remains.
    Deleted,
}

/// The key of the tombstone `{"$delete": true}`: as a patch value it
/// deletes the stored key (a merge otherwise never deletes).
pub const TOMBSTONE_KEY: &[u8] = b"$delete";

/// Whether `item` is the tombstone `{"$delete": true}`.
#[inline]
pub fn is_tombstone(item: Item<'_>) -> bool {
    // The header check first: it rules out almost every value at no cost.
    if item.container_kind() != Some((Kind::Object, 1)) {
        return false;
    }
    matches!(item.as_object().map(|o| o.get(TOMBSTONE_KEY)), Some(Ok(Some(v))) if v.ty == T_TRUE)
}

/// Whether a value may hold a tombstone: a byte scan for its key, so an
/// inserted subtree without one is copied without being walked. `$` is rare
/// in documents: memchr finds each one (or none) many bytes at a time, and
/// only there is the key compared.
pub fn may_hold_tombstone(patch: &[u8]) -> bool {
    memchr::memchr_iter(b'$', patch).any(|i| patch[i..].starts_with(TOMBSTONE_KEY))
}

/// The rules in force at one position of the walk.
#[derive(Clone)]
struct Ctx<'p> {
    arrays: &'p ArrayMode,
    nulls: NullMode,
    value: ValueRule,
    /// Policy path nodes matching this position (empty without path rules).
    active: Vec<usize>,
}

/// What to write for one object key or array element.
#[derive(Clone, Copy)]
enum Action<'a> {
    Copy(Item<'a>),
    Null,
    /// Rebuild: merge (or, in a diff, diff) these two values.
    Merge(Option<Item<'a>>, Item<'a>),
}

#[derive(Clone, Copy)]
struct Step<'a> {
    key: &'a [u8],
    action: Action<'a>,
}

const NULL_ITEM: Item<'static> = Item {
    ty: T_NULL,
    data: &[],
};

/// What a planned `Action::Merge` means when the plan is written.
enum Nested<'c, 'p> {
    /// Merge the two values under these rules.
    Merge(&'c Ctx<'p>),
    /// Diff two objects.
    Diff,
}

/// Two objects' pairs matched by key, in jsonb key order: `(key, value in
/// the first, value in the second)`. A missing first object has no pairs.
struct Join<'a> {
    t: Pairs<'a>,
    p: Pairs<'a>,
    tn: Option<(&'a [u8], Item<'a>)>,
    pn: Option<(&'a [u8], Item<'a>)>,
}

type Joined<'a> = (&'a [u8], Option<Item<'a>>, Option<Item<'a>>);

impl<'a> Join<'a> {
    fn new(t: Option<Container<'a>>, p: Container<'a>) -> Result<Self, MergeError> {
        let t = match t {
            Some(t) => t,
            None => Container::new(EMPTY_OBJECT)?,
        };
        let (mut t, mut p) = (t.pairs(), p.pairs());
        let (tn, pn) = (t.next_pair(), p.next_pair());
        Ok(Join { t, p, tn, pn })
    }

    /// After the last pair: whether either object turned out malformed.
    fn finish(&self) -> Result<(), MergeError> {
        if self.t.failed() || self.p.failed() {
            Err(MergeError::Format)
        } else {
            Ok(())
        }
    }
}

impl<'a> Iterator for Join<'a> {
    type Item = Joined<'a>;

    #[inline]
    fn next(&mut self) -> Option<Joined<'a>> {
        Some(match (self.tn, self.pn) {
            (None, None) => return None,
            (Some((tk, tv)), None) => {
                self.tn = self.t.next_pair();
                (tk, Some(tv), None)
            }
            (None, Some((pk, pv))) => {
                self.pn = self.p.next_pair();
                (pk, None, Some(pv))
            }
            (Some((tk, tv)), Some((pk, pv))) => match key_cmp(tk, pk) {
                Ordering::Less => {
                    self.tn = self.t.next_pair();
                    (tk, Some(tv), None)
                }
                Ordering::Greater => {
                    self.pn = self.p.next_pair();
                    (pk, None, Some(pv))
                }
                Ordering::Equal => {
                    self.tn = self.t.next_pair();
                    self.pn = self.p.next_pair();
                    (tk, Some(tv), Some(pv))
                }
            },
        })
    }
}

struct Walker<'a, 'p> {
    policy: &'p Policy,
    w: Writer,
    limits: Limits,
    /// Plans of the objects being built, innermost last; one shared stack
    /// so a merge allocates no per-object vectors.
    steps: Vec<Step<'a>>,
    /// Tombstones are honoured (every policy but RFC 7396).
    tombstones: bool,
    /// The patch of a whole merge, and whether it holds no `$` anywhere (so
    /// no tombstone), found out the first time a value of it needs to know.
    patch: &'a [u8],
    patch_clean: std::cell::Cell<Option<bool>>,
}

impl<'a, 'p> Walker<'a, 'p> {
    fn new(policy: &'p Policy, limits: Limits, capacity: usize) -> Self {
        let buf = OUTPUT_BUFFER.with_borrow_mut(std::mem::take);
        Walker {
            policy,
            w: Writer::reusing(buf, capacity),
            limits,
            steps: Vec::new(),
            tombstones: !policy.rfc7396,
            patch: &[],
            patch_clean: std::cell::Cell::new(None),
        }
    }

    /// Whether patch value `p`, which the target holds alike, may hold a
    /// tombstone that this merge honours. A document written back whole
    /// asks this of most of its values: one scan of the whole patch answers
    /// for all of them when it holds no `$`.
    fn alike_may_hold_tombstone(&self, p: Item<'_>) -> bool {
        if !self.tombstones {
            return false;
        }
        let (r, whole) = (p.data.as_ptr_range(), self.patch.as_ptr_range());
        if whole.start <= r.start && r.end <= whole.end {
            let clean = self.patch_clean.get().unwrap_or_else(|| {
                let clean = memchr::memchr(b'$', self.patch).is_none();
                self.patch_clean.set(Some(clean));
                clean
            });
            if clean {
                return false;
            }
        }
        may_hold_tombstone(p.data)
    }

    fn check_depth(&self, depth: usize) -> Result<(), MergeError> {
        self.limits.check(depth)
    }

    fn root_ctx(&self) -> Ctx<'p> {
        Ctx {
            arrays: &self.policy.arrays,
            nulls: self.policy.nulls,
            value: ValueRule::Merge,
            active: self.policy.root(),
        }
    }

    /// Rules for the value under `key` inside a position with rules `c`.
    fn child_ctx(&self, c: &Ctx<'p>, key: &[u8]) -> Ctx<'p> {
        if c.active.is_empty() {
            return Ctx {
                arrays: c.arrays,
                nulls: c.nulls,
                value: ValueRule::Merge,
                active: Vec::new(),
            };
        }
        let mut active = Vec::with_capacity(c.active.len() * 2);
        self.policy.descend(&c.active, key, &mut active);
        let r = self.policy.resolve(&active);
        Ctx {
            arrays: r.arrays.unwrap_or(c.arrays),
            nulls: r.nulls.unwrap_or(c.nulls),
            value: r.value.unwrap_or(ValueRule::Merge),
            active,
        }
    }

    /// A patch value written where the target has none (or loses to it):
    /// copied as is unless some rule deletes nulls, which must be stripped.
    fn insert(&self, p: Item<'a>) -> Action<'a> {
        // Walked when nulls must be stripped or tombstones dropped from it;
        // only this subtree is scanned, not the whole patch.
        if matches!(p.container_kind(), Some((Kind::Object, _)))
            && (self.policy.any_delete || (self.tombstones && may_hold_tombstone(p.data)))
        {
            Action::Merge(None, p)
        } else {
            Action::Copy(p)
        }
    }

    /// The deep-merge decision for one position; `None` drops the key.
    fn decide(
        &self,
        t: Option<Item<'a>>,
        p: Item<'a>,
        c: &Ctx<'p>,
    ) -> Result<Option<Action<'a>>, MergeError> {
        // A tombstone is a deliberate delete: it outranks every rule.
        if self.tombstones && is_tombstone(p) {
            return Ok(None);
        }
        // `keep` outranks every null mode: a stored value it protects stays.
        if let Some(t) = t.filter(|t| c.value == ValueRule::Keep && !t.is_null()) {
            return Ok(Some(Action::Copy(t)));
        }
        if p.is_null() {
            return Ok(match c.nulls {
                NullMode::Keep => Some(t.map_or(Action::Null, Action::Copy)),
                NullMode::Overwrite => Some(Action::Null),
                NullMode::Delete => None,
            });
        }
        let Some(t) = t else {
            return Ok(Some(self.insert(p)));
        };
        Ok(Some(match c.value {
            ValueRule::Keep | ValueRule::Replace => self.insert(p),
            ValueRule::Max | ValueRule::Min => match scalar_cmp(p, t)? {
                Some(Ordering::Greater) if c.value == ValueRule::Max => self.insert(p),
                Some(Ordering::Less) if c.value == ValueRule::Min => self.insert(p),
                Some(_) => Action::Copy(t),
                None => self.insert(p),
            },
            ValueRule::Merge => match (t.container_kind(), p.container_kind()) {
                (_, Some((Kind::Object, 0))) if !self.policy.rfc7396 => Action::Copy(t),
                (Some((Kind::Object, _)), Some((Kind::Object, _))) => Action::Merge(Some(t), p),
                (Some((Kind::Array, _)), Some((Kind::Array, _)))
                    if *c.arrays != ArrayMode::Replace =>
                {
                    Action::Merge(Some(t), p)
                }
                _ => self.insert(p),
            },
        }))
    }

    /// Whether merging object `p` into object `t` gives `p` itself: every
    /// key of `t` is in `p`, and every key's decision keeps `p`'s value
    /// (objects in both sides, recursively). An application that loaded a
    /// document and writes it back whole, changed, sends such a patch; the
    /// merge then needs no new document. Decides without writing: a key
    /// only `t` has, found early when `p` is a small patch, ends it.
    fn yields_patch(
        &self,
        t: Container<'a>,
        p: Container<'a>,
        c: &Ctx<'p>,
        depth: usize,
    ) -> Result<bool, MergeError> {
        self.check_depth(depth)?;
        if p.len() < t.len() {
            return Ok(false);
        }
        // Without path rules every child has this position's rules: no
        // context to derive per key.
        let inherited = c.active.is_empty() && c.value == ValueRule::Merge;
        // The two objects' keys matched in order by hand (not by a Join):
        // this walk runs on every row an ORM writes back to a protected table.
        let (mut tp, mut pp) = (t.pairs(), p.pairs());
        let mut tn = tp.next_pair();
        while let Some((key, pv)) = pp.next_pair() {
            let tv = match tn {
                Some((tk, tv)) => match key_cmp(tk, key) {
                    // A key only the target has: the merge keeps it.
                    Ordering::Less => return Ok(false),
                    Ordering::Equal => {
                        tn = tp.next_pair();
                        Some(tv)
                    }
                    Ordering::Greater => None,
                },
                None => None,
            };
            let derived;
            let cc = if inherited {
                c
            } else {
                derived = self.child_ctx(c, key);
                &derived
            };
            // The same value on both sides, where no rule changes it: the
            // merge gives it back, with no need to walk it.
            if tv.is_some_and(|tv| tv.ty == pv.ty && tv.data == pv.data)
                && self.plain(cc, pv, depth + 1)
            {
                continue;
            }
            let kept = match self.decide(tv, pv, cc)? {
                Some(Action::Copy(x)) => std::ptr::eq(x.data, pv.data) && x.ty == pv.ty,
                Some(Action::Null) => pv.is_null(),
                Some(Action::Merge(Some(ti), pi)) => match (ti.as_object(), pi.as_object()) {
                    (Some(to), Some(po)) => self.yields_patch(to, po, cc, depth + 1)?,
                    _ => false,
                },
                _ => false,
            };
            if !kept {
                return Ok(false);
            }
        }
        if tp.failed() || pp.failed() {
            return Err(MergeError::Format);
        }
        Ok(tn.is_none())
    }

    /// Whether merging `p` (at `depth`) with itself gives it back: no path
    /// rule applies here or below, arrays are replaced, a null deletes
    /// nothing and no tombstone can delete a key; and the walk it saves
    /// could not have gone past the depth limit (a container level takes
    /// at least 8 bytes), which stays exact.
    fn plain(&self, c: &Ctx<'p>, p: Item<'a>, depth: usize) -> bool {
        depth + p.data.len() / 8 < self.limits.max_depth
            && c.active.is_empty()
            && *c.arrays == ArrayMode::Replace
            && c.nulls != NullMode::Delete
            && !self.alike_may_hold_tombstone(p)
    }

    /// Plans and writes one object (target side optional: stripping nulls).
    fn build_object(
        &mut self,
        t: Option<Container<'a>>,
        p: Container<'a>,
        c: &Ctx<'p>,
        depth: usize,
    ) -> Result<Open, MergeError> {
        self.check_depth(depth)?;
        let base = self.steps.len();
        self.plan_object(t, p, c)?;
        self.write_planned(base, Nested::Merge(c), depth)
    }

    /// Pushes the plan of one object onto `steps`. Kept out of line: its
    /// locals (the key join, decisions) would otherwise stay on the stack of
    /// every level of a deep merge while the levels below are written.
    #[inline(never)]
    fn plan_object(
        &mut self,
        t: Option<Container<'a>>,
        p: Container<'a>,
        c: &Ctx<'p>,
    ) -> Result<(), MergeError> {
        self.steps.reserve(t.map_or(0, |t| t.len()) + p.len());
        let mut join = Join::new(t, p)?;
        for (key, tv, pv) in join.by_ref() {
            let action = match pv {
                None => Some(Action::Copy(tv.expect("one side has the key"))),
                Some(pv) => self.decide(tv, pv, &self.child_ctx(c, key))?,
            };
            if let Some(action) = action {
                self.steps.push(Step { key, action });
            }
        }
        join.finish()
    }

    /// Writes the object planned in `steps[base..]` and pops the plan.
    fn write_planned(
        &mut self,
        base: usize,
        nested: Nested<'_, 'p>,
        depth: usize,
    ) -> Result<Open, MergeError> {
        let n = self.steps.len() - base;
        let mut o = self.w.open(Kind::Object, n)?;
        for i in base..base + n {
            let key = self.steps[i].key;
            self.w.push_string(&mut o, key)?;
        }
        for i in base..base + n {
            let Step { key, action } = self.steps[i];
            match (action, &nested) {
                (Action::Copy(item), _) => self.w.push_item(&mut o, item)?,
                (Action::Null, _) => self.w.push_item(&mut o, NULL_ITEM)?,
                (Action::Merge(t, p), Nested::Merge(c)) => {
                    let cc = self.child_ctx(c, key);
                    self.emit_merge(&mut o, t, p, &cc, depth + 1)?;
                }
                (Action::Merge(old, new), Nested::Diff) => {
                    let old = old
                        .and_then(Item::as_object)
                        .expect("diff plans two objects");
                    let new = new.as_object().expect("diff plans two objects");
                    let start = self.w.len();
                    let inner = self.build_diff(old, new, depth + 1)?;
                    self.w.close_nested(&mut o, start, inner)?;
                }
            }
        }
        self.steps.truncate(base);
        Ok(o)
    }

    /// Writes the merge of `t` and `p` (two objects, or two arrays under a
    /// non-replace mode, or a patch object alone) as the next child of `parent`.
    fn emit_merge(
        &mut self,
        parent: &mut Open,
        t: Option<Item<'a>>,
        p: Item<'a>,
        c: &Ctx<'p>,
        depth: usize,
    ) -> Result<(), MergeError> {
        let start = self.w.len();
        let inner = self.build(t, p, c, depth)?;
        self.w.close_nested(parent, start, inner)?;
        Ok(())
    }

    fn build(
        &mut self,
        t: Option<Item<'a>>,
        p: Item<'a>,
        c: &Ctx<'p>,
        depth: usize,
    ) -> Result<Open, MergeError> {
        if let Some(po) = p.as_object() {
            // A target is planned only where its header says object too.
            let to = t
                .map(|t| t.as_object().ok_or(MergeError::Format))
                .transpose()?;
            return self.build_object(to, po, c, depth);
        }
        match (t.and_then(Item::as_array), p.as_array()) {
            (Some(ta), Some(pa)) => self.build_array(ta, pa, c, depth),
            // Planned from container headers alone: a header that promised
            // an object or array the bytes do not hold is corrupted input.
            _ => Err(MergeError::Format),
        }
    }

    /// Out of line for the same reason as [`Walker::plan_object`]: its
    /// vectors and hash maps must not sit in the frame of every object level.
    #[inline(never)]
    fn build_array(
        &mut self,
        t: Container<'a>,
        p: Container<'a>,
        c: &Ctx<'p>,
        depth: usize,
    ) -> Result<Open, MergeError> {
        self.check_depth(depth)?;
        let te: Vec<Item<'a>> = t.elements().collect::<Result<_, _>>()?;
        let pe: Vec<Item<'a>> = p.elements().collect::<Result<_, _>>()?;
        match c.arrays {
            ArrayMode::Replace => unreachable!("replace never rebuilds"),
            ArrayMode::Concat => {
                self.write_items(te.iter().chain(pe.iter()).copied(), te.len() + pe.len())
            }
            ArrayMode::Union => {
                let mut seen = Seen::default();
                let mut out = Vec::with_capacity(te.len() + pe.len());
                for &e in &te {
                    seen.insert(e, out.len(), depth, self.limits)?;
                    out.push(e);
                }
                for &e in &pe {
                    if seen.find(e, &out, depth, self.limits)?.is_none() {
                        seen.insert(e, out.len(), depth, self.limits)?;
                        out.push(e);
                    }
                }
                let n = out.len();
                self.write_items(out.into_iter(), n)
            }
            ArrayMode::MergeBy(field) => self.merge_by(&te, &pe, field, c, depth),
        }
    }

    fn write_items(
        &mut self,
        items: impl Iterator<Item = Item<'a>>,
        n: usize,
    ) -> Result<Open, MergeError> {
        let mut o = self.w.open(Kind::Array, n)?;
        for item in items {
            self.w.push_item(&mut o, item)?;
        }
        Ok(o)
    }

    /// Arrays of records matched on `field`: a target element whose field
    /// equals a patch element's is merged with it in place (several patch
    /// elements with the same field value merge in order); patch elements
    /// with a new field value are merged together and appended in order of
    /// first appearance; elements without the field are kept (target) or
    /// appended (patch). Only the first target element with a given value
    /// is matched.
    fn merge_by(
        &mut self,
        te: &[Item<'a>],
        pe: &[Item<'a>],
        field: &[u8],
        c: &Ctx<'p>,
        depth: usize,
    ) -> Result<Open, MergeError> {
        let field_of = |e: Item<'a>| -> Result<Option<Item<'a>>, MergeError> {
            match e.as_object() {
                Some(o) => Ok(o.get(field)?),
                None => Ok(None),
            }
        };
        // groups[g] = (target element or None, patch elements to merge in order)
        let mut groups: Vec<(Option<Item<'a>>, Vec<Item<'a>>)> =
            Vec::with_capacity(te.len() + pe.len());
        let mut keys: Vec<Item<'a>> = Vec::new(); // field value per keyed group
        let mut key_group: Vec<usize> = Vec::new();
        let mut seen = Seen::default();
        for &e in te {
            if let Some(k) = field_of(e)? {
                if seen.find(k, &keys, depth, self.limits)?.is_none() {
                    seen.insert(k, keys.len(), depth, self.limits)?;
                    keys.push(k);
                    key_group.push(groups.len());
                }
            }
            groups.push((Some(e), Vec::new()));
        }
        for &e in pe {
            match field_of(e)? {
                Some(k) => match seen.find(k, &keys, depth, self.limits)? {
                    Some(i) => groups[key_group[i]].1.push(e),
                    None => {
                        seen.insert(k, keys.len(), depth, self.limits)?;
                        keys.push(k);
                        key_group.push(groups.len());
                        groups.push((None, vec![e]));
                    }
                },
                None => groups.push((None, vec![e])),
            }
        }
        let elem = Ctx {
            arrays: c.arrays,
            nulls: c.nulls,
            value: ValueRule::Merge,
            active: c.active.clone(),
        };
        let mut o = self.w.open(Kind::Array, groups.len())?;
        for (t, ps) in groups {
            self.write_folded(&mut o, t, &ps, &elem, depth + 1)?;
        }
        Ok(o)
    }

    /// Writes `t` merged with each of `ps` in turn. One merge is written in
    /// place; a chain goes through intermediate datums.
    fn write_folded(
        &mut self,
        o: &mut Open,
        t: Option<Item<'a>>,
        ps: &[Item<'a>],
        c: &Ctx<'p>,
        depth: usize,
    ) -> Result<(), MergeError> {
        let (acc, rest) = match (t, ps) {
            (Some(t), []) => return Ok(self.w.push_item(o, t)?),
            (t, [p, rest @ ..]) => (self.decide(t, *p, c)?, rest),
            (None, []) => unreachable!("every group has an element"),
        };
        let acc = acc.unwrap_or(Action::Null);
        if rest.is_empty() {
            return self.write_action(o, acc, c, depth);
        }
        // Materialize the chain; each step is a fresh walk over owned bytes.
        let mut datum = {
            let sub = Walker::new(self.policy, self.limits, 256);
            sub.write_root(acc, c, depth)?
        };
        for p in rest {
            let cur = Container::new(&datum[4..])?;
            let item = cur.root_item()?;
            let sub = Walker::new(self.policy, self.limits, datum.len() + p.data.len());
            let action = sub.decide(Some(item), *p, c)?.unwrap_or(Action::Null);
            let next = sub.write_root(action, c, depth)?;
            datum = next;
        }
        let root = Container::new(&datum[4..])?;
        self.w.push_item(o, root.root_item()?)?;
        Ok(())
    }

    fn write_action(
        &mut self,
        o: &mut Open,
        a: Action<'a>,
        c: &Ctx<'p>,
        depth: usize,
    ) -> Result<(), MergeError> {
        match a {
            Action::Copy(item) => self.w.push_item(o, item)?,
            Action::Null => self.w.push_item(o, NULL_ITEM)?,
            Action::Merge(t, p) => self.emit_merge(o, t, p, c, depth)?,
        }
        Ok(())
    }

    /// Writes an action as a whole root datum.
    fn write_root(
        mut self,
        a: Action<'a>,
        c: &Ctx<'p>,
        depth: usize,
    ) -> Result<Vec<u8>, MergeError> {
        match a {
            Action::Copy(item) => Ok(Writer::root_from_item(item)?),
            Action::Null => Ok(Writer::root_from_item(NULL_ITEM)?),
            Action::Merge(t, p) => {
                self.build(t, p, c, depth)?;
                Ok(self.w.into_inner())
            }
        }
    }
}

/// Compares two scalars for `max`/`min`: numbers by value, strings by code
/// point, booleans false < true; `None` for any other pairing.
fn scalar_cmp(a: Item<'_>, b: Item<'_>) -> Result<Option<Ordering>, MergeError> {
    Ok(match (a.value()?, b.value()?) {
        (Value::Numeric(x), Value::Numeric(y)) => Some(numeric::cmp(x, y)?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(&y)),
        _ => None,
    })
}

/// Set of values by jsonb equality (numbers by value, as `=` on jsonb does),
/// hashed so `union` and `merge_by` stay linear on long arrays.
#[derive(Default)]
struct Seen {
    by_hash: HashMap<u64, Vec<usize>>,
}

impl Seen {
    fn insert(
        &mut self,
        v: Item<'_>,
        index: usize,
        depth: usize,
        limits: Limits,
    ) -> Result<(), MergeError> {
        self.by_hash
            .entry(value_hash(v, depth, limits)?)
            .or_default()
            .push(index);
        Ok(())
    }

    /// The index (into `values`) of a value equal to `v`.
    fn find(
        &self,
        v: Item<'_>,
        values: &[Item<'_>],
        depth: usize,
        limits: Limits,
    ) -> Result<Option<usize>, MergeError> {
        if let Some(candidates) = self.by_hash.get(&value_hash(v, depth, limits)?) {
            for &i in candidates {
                if equal(v, values[i], depth, false, limits)? {
                    return Ok(Some(i));
                }
            }
        }
        Ok(None)
    }
}

fn value_hash(v: Item<'_>, depth: usize, limits: Limits) -> Result<u64, MergeError> {
    let mut h = DefaultHasher::new();
    hash_into(v, &mut h, depth, limits)?;
    Ok(h.finish())
}

fn hash_into(
    v: Item<'_>,
    h: &mut DefaultHasher,
    depth: usize,
    limits: Limits,
) -> Result<(), MergeError> {
    limits.check(depth)?;
    v.ty.hash(h);
    match v.value()? {
        Value::Numeric(n) => numeric::hash_value(n, h)?,
        Value::Container(c) => {
            (c.kind() as u8).hash(h);
            c.len().hash(h);
            for e in c.all() {
                hash_into(e?, h, depth + 1, limits)?;
            }
        }
        _ => v.data.hash(h),
    }
    Ok(())
}

/// jsonb equality. `exact` also requires numbers to print the same
/// (`1.0` vs `1.00` differ), which a diff needs to reproduce text exactly.
fn equal(
    a: Item<'_>,
    b: Item<'_>,
    depth: usize,
    exact: bool,
    limits: Limits,
) -> Result<bool, MergeError> {
    if a.ty != b.ty {
        return Ok(false);
    }
    if a.data == b.data {
        return Ok(true);
    }
    limits.check(depth)?;
    Ok(match (a.value()?, b.value()?) {
        (Value::Numeric(x), Value::Numeric(y)) => {
            if exact {
                numeric::same(x, y)?
            } else {
                numeric::cmp(x, y)? == Ordering::Equal
            }
        }
        (Value::Container(x), Value::Container(y)) => {
            if x.kind() != y.kind() || x.len() != y.len() {
                return Ok(false);
            }
            for (ea, eb) in x.all().zip(y.all()) {
                if !equal(ea?, eb?, depth + 1, exact, limits)? {
                    return Ok(false);
                }
            }
            true
        }
        _ => false,
    })
}

/// Policy-driven deep merge of two root containers (datums without their
/// varlena header).
pub fn deep_merge(
    target: &[u8],
    patch: &[u8],
    policy: &Policy,
    limits: Limits,
) -> Result<Merged, MergeError> {
    let (tc, pc) = (Container::new(target)?, Container::new(patch)?);
    let (t, p) = (tc.root_item()?, pc.root_item()?);
    let mut walker = Walker::new(policy, limits, target.len() + patch.len() + 64);
    if walker.tombstones && is_tombstone(p) {
        return Ok(Merged::Deleted);
    }
    walker.patch = patch;
    let c = walker.root_ctx();
    // A null patch at the root has no key to delete: it keeps or replaces.
    let action = match walker.decide(Some(t), p, &c)? {
        Some(a) => a,
        None => Action::Copy(p),
    };
    let unchanged = match action {
        Action::Merge(Some(to), po) => match (to.as_object(), po.as_object()) {
            (Some(to), Some(po)) if walker.yields_patch(to, po, &c, 1)? => Some(Merged::Patch),
            _ => None,
        },
        Action::Copy(x) if std::ptr::eq(x.data, t.data) && x.ty == t.ty => Some(Merged::Target),
        Action::Copy(x) if std::ptr::eq(x.data, p.data) && x.ty == p.ty => Some(Merged::Patch),
        _ => None,
    };
    match unchanged {
        Some(m) => {
            // The output buffer, unused, stays for the next merge.
            recycle(walker.w.into_inner());
            Ok(m)
        }
        None => Ok(Merged::Built(walker.write_root(action, &c, 1)?)),
    }
}

/// RFC 7396 JSON Merge Patch: deep merge where null deletes and arrays replace.
pub fn merge_patch(target: &[u8], patch: &[u8], limits: Limits) -> Result<Merged, MergeError> {
    deep_merge(target, patch, &Policy::rfc7396(), limits)
}

/// The RFC 7396 patch that turns `old` into `new`. A merge patch cannot
/// express a JSON null stored as a value (null means delete), a change inside
/// an array (arrays are replaced whole) or a non-object root other than by
/// replacing the whole document; for such parts the patch carries `new`'s
/// value, which is exact except for nulls stored in objects.
pub fn diff(old: &[u8], new: &[u8], limits: Limits) -> Result<Merged, MergeError> {
    let (oc, nc) = (Container::new(old)?, Container::new(new)?);
    if oc.kind() != Kind::Object || nc.kind() != Kind::Object {
        return Ok(Merged::Patch);
    }
    let policy = Policy::default();
    let mut walker = Walker::new(&policy, limits, new.len() + 64);
    walker.build_diff(oc, nc, 1)?;
    Ok(Merged::Built(walker.w.into_inner()))
}

impl<'a> Walker<'a, '_> {
    /// Pushes the plan of one object's diff onto `steps` (out of line, as
    /// [`Walker::plan_object`]).
    #[inline(never)]
    fn plan_diff(
        &mut self,
        old: Container<'a>,
        new: Container<'a>,
        depth: usize,
    ) -> Result<(), MergeError> {
        let mut join = Join::new(Some(old), new)?;
        for pair in join.by_ref() {
            let action = match pair {
                (key, Some(_), None) => Step {
                    key,
                    action: Action::Null,
                },
                (key, None, Some(nv)) => Step {
                    key,
                    action: Action::Copy(nv),
                },
                (key, Some(ov), Some(nv)) => {
                    if equal(ov, nv, depth, true, self.limits)? {
                        continue;
                    }
                    let both_objects = ov.as_object().is_some() && nv.as_object().is_some();
                    let action = if both_objects {
                        Action::Merge(Some(ov), nv)
                    } else {
                        Action::Copy(nv)
                    };
                    Step { key, action }
                }
                (_, None, None) => unreachable!("one side has the key"),
            };
            self.steps.push(action);
        }
        join.finish()
    }

    fn build_diff(
        &mut self,
        old: Container<'a>,
        new: Container<'a>,
        depth: usize,
    ) -> Result<Open, MergeError> {
        self.check_depth(depth)?;
        let base = self.steps.len();
        self.plan_diff(old, new, depth)?;
        self.write_planned(base, Nested::Diff, depth)
    }
}
