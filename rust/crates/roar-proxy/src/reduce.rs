//! The numeric core of active storage: bytes -> typed array -> selection -> mask -> reduction.
//!
//! Owns the semantics of the wire contract once a request is validated: dtypes, byte order,
//! C/F order, numpy slice selections, axis reductions, the missing-data descriptors, counts,
//! and serialising the result in the request's order. It never does I/O and never panics on
//! client input: every index is derived from a validated shape whose product matches the
//! data's length (checked here again). `min`/`max` ignore NaN like numpy's
//! `nanmin`/`nanmax` (an output element whose valid values are all NaN is NaN); `sum` and
//! `mean` propagate NaN like `numpy.sum`.

use serde_json::Number;

/// Element types of the contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    I32,
    I64,
    U32,
    U64,
    F32,
    F64,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::I32 | DType::U32 | DType::F32 => 4,
            _ => 8,
        }
    }

    /// The contract's name (`float32`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DType::I32 => "int32",
            DType::I64 => "int64",
            DType::U32 => "uint32",
            DType::U64 => "uint64",
            DType::F32 => "float32",
            DType::F64 => "float64",
        }
    }
}

/// The reductions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Count,
    Max,
    Min,
    Select,
    Sum,
    Mean,
}

impl Op {
    /// Parses the `{op}` of the URL path.
    pub fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "count" => Op::Count,
            "max" => Op::Max,
            "min" => Op::Min,
            "select" => Op::Select,
            "sum" => Op::Sum,
            "mean" => Op::Mean,
            _ => return None,
        })
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Op::Count => "count",
            Op::Max => "max",
            Op::Min => "min",
            Op::Select => "select",
            Op::Sum => "sum",
            Op::Mean => "mean",
        }
    }
}

/// A missing-data descriptor, values still as JSON numbers (checked per dtype).
#[derive(Clone, Debug)]
pub enum Missing {
    /// `missing_value` (one) or `missing_values` (several): equal values are missing.
    Values(Vec<Number>),
    /// `valid_min`: smaller values are missing.
    Min(Number),
    /// `valid_max`: larger values are missing.
    Max(Number),
    /// `valid_range`: values outside `[lo, hi]` are missing.
    Range(Number, Number),
}

/// A validated request's array description.
#[derive(Clone, Debug)]
pub struct Spec {
    pub op: Op,
    pub dtype: DType,
    /// The data is in the other byte order than this machine's.
    pub swap: bool,
    /// Logical shape (a 1-D shape of all elements when the request had none).
    pub shape: Vec<usize>,
    /// Fortran (column-major) order, for the data and for the result.
    pub order_f: bool,
    /// One `[start, end, stride]` per dimension.
    pub selection: Option<Vec<[i64; 3]>>,
    /// Axes reduced over (sorted, distinct); None: all of them.
    pub axis: Option<Vec<usize>>,
    pub missing: Option<Missing>,
}

/// A reduction's result.
#[derive(Debug)]
pub struct Output {
    /// Native-order result bytes, laid out in the request's order.
    pub bytes: Vec<u8>,
    pub dtype: &'static str,
    pub shape: Vec<usize>,
    /// Non-missing elements per output element (one entry for a full reduction or `select`).
    pub counts: Vec<i64>,
}

/// One element type.
pub trait Elem: Copy + PartialOrd + Send + Sync + 'static {
    const SIZE: usize;
    const MAXV: Self;
    const MINV: Self;
    /// Accumulator of sums (wrapping integers; f64 for floats).
    type Acc: Copy + Send;
    fn read(b: &[u8], swap: bool) -> Self;
    fn put(self, out: &mut Vec<u8>);
    fn from_num(n: &Number) -> Option<Self>;
    fn is_nan(self) -> bool;
    fn acc0() -> Self::Acc;
    fn add(a: Self::Acc, x: Self) -> Self::Acc;
    fn merge(a: Self::Acc, b: Self::Acc) -> Self::Acc;
    fn fin(a: Self::Acc) -> Self;
    fn mean(a: Self::Acc, n: i64) -> Self;
}

fn int_from_num<T: TryFrom<i64> + TryFrom<u64>>(n: &Number) -> Option<T> {
    if let Some(v) = n.as_i64() {
        return T::try_from(v).ok();
    }
    if let Some(v) = n.as_u64() {
        return T::try_from(v).ok();
    }
    let f = n.as_f64()?;
    // An integral float (`2.0`) names an integer; anything else is not representable.
    if f.fract() != 0.0 || !f.is_finite() || f.abs() > 1.8e19 {
        return None;
    }
    if f < 0.0 {
        T::try_from(f as i64).ok()
    } else {
        T::try_from(f as u64).ok()
    }
}

macro_rules! int_elem {
    ($t:ty) => {
        impl Elem for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            const MAXV: Self = <$t>::MAX;
            const MINV: Self = <$t>::MIN;
            type Acc = $t;
            #[inline(always)]
            fn read(b: &[u8], swap: bool) -> Self {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(b);
                let v = <$t>::from_ne_bytes(a);
                if swap {
                    v.swap_bytes()
                } else {
                    v
                }
            }
            fn put(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_ne_bytes())
            }
            fn from_num(n: &Number) -> Option<Self> {
                int_from_num(n)
            }
            #[inline(always)]
            fn is_nan(self) -> bool {
                false
            }
            fn acc0() -> $t {
                0
            }
            #[inline(always)]
            fn add(a: $t, x: $t) -> $t {
                a.wrapping_add(x)
            }
            fn merge(a: $t, b: $t) -> $t {
                a.wrapping_add(b)
            }
            fn fin(a: $t) -> $t {
                a
            }
            fn mean(a: $t, n: i64) -> $t {
                if n == 0 {
                    0
                } else {
                    (a as f64 / n as f64) as $t
                }
            }
        }
    };
}
int_elem!(i32);
int_elem!(i64);
int_elem!(u32);
int_elem!(u64);

macro_rules! float_elem {
    ($t:ty, $bits:ty) => {
        impl Elem for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            const MAXV: Self = <$t>::MAX;
            const MINV: Self = <$t>::MIN;
            type Acc = f64;
            #[inline(always)]
            fn read(b: &[u8], swap: bool) -> Self {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(b);
                let v = <$bits>::from_ne_bytes(a);
                <$t>::from_bits(if swap { v.swap_bytes() } else { v })
            }
            fn put(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_ne_bytes())
            }
            fn from_num(n: &Number) -> Option<Self> {
                let f = n.as_f64()?;
                (f.is_finite() && f.abs() <= <$t>::MAX as f64).then_some(f as $t)
            }
            #[inline(always)]
            fn is_nan(self) -> bool {
                self.is_nan()
            }
            fn acc0() -> f64 {
                0.0
            }
            #[inline(always)]
            fn add(a: f64, x: $t) -> f64 {
                a + x as f64
            }
            fn merge(a: f64, b: f64) -> f64 {
                a + b
            }
            fn fin(a: f64) -> $t {
                a as $t
            }
            fn mean(a: f64, n: i64) -> $t {
                (a / n as f64) as $t
            }
        }
    };
}
float_elem!(f32, u32);
float_elem!(f64, u64);

/// The missing-data test for one dtype.
#[derive(Clone)]
pub enum Mask<T> {
    None,
    Values(Vec<T>),
    Min(T),
    Max(T),
    Range(T, T),
}

impl<T: Elem> Mask<T> {
    /// Converts a descriptor; Err names the value that is not representable in T.
    pub fn new(m: Option<&Missing>) -> Result<Mask<T>, String> {
        let conv = |n: &Number| {
            T::from_num(n).ok_or_else(|| format!("{n} is not representable in the dtype"))
        };
        Ok(match m {
            None => Mask::None,
            Some(Missing::Values(v)) => Mask::Values(v.iter().map(conv).collect::<Result<_, _>>()?),
            Some(Missing::Min(v)) => Mask::Min(conv(v)?),
            Some(Missing::Max(v)) => Mask::Max(conv(v)?),
            Some(Missing::Range(lo, hi)) => {
                let (l, h) = (conv(lo)?, conv(hi)?);
                if l.partial_cmp(&h) != Some(std::cmp::Ordering::Less) {
                    return Err("valid_range: the lower bound must be below the upper one".into());
                }
                Mask::Range(l, h)
            }
        })
    }

    /// Whether `x` is a valid (non-missing) value. NaN compares false everywhere, so it is
    /// never missing, as with numpy's `masked_equal`/`masked_less`/`masked_outside`.
    #[inline(always)]
    pub fn valid(&self, x: T) -> bool {
        match self {
            Mask::None => true,
            Mask::Values(v) => !v.contains(&x),
            Mask::Min(m) => x.partial_cmp(m) != Some(std::cmp::Ordering::Less),
            Mask::Max(m) => x.partial_cmp(m) != Some(std::cmp::Ordering::Greater),
            Mask::Range(l, h) => {
                x.partial_cmp(l) != Some(std::cmp::Ordering::Less)
                    && x.partial_cmp(h) != Some(std::cmp::Ordering::Greater)
            }
        }
    }
}

/// numpy's `slice(start, stop, step).indices(n)` and the resulting length.
pub fn slice_indices(start: i64, stop: i64, step: i64, n: i64) -> (i64, i64) {
    let (lower, upper) = if step > 0 { (0, n) } else { (-1, n - 1) };
    let clamp = |v: i64| {
        if v < 0 {
            (v + n).max(lower)
        } else {
            v.min(upper)
        }
    };
    let (s, e) = (clamp(start), clamp(stop));
    let len = if step > 0 {
        if e > s {
            (e - s - 1) / step + 1
        } else {
            0
        }
    } else if s > e {
        (s - e - 1) / (-step) + 1
    } else {
        0
    };
    (s, len)
}

/// Per-output-element state of a fold.
struct Acc<T: Elem> {
    sum: T::Acc,
    min: T,
    max: T,
    count: i64,
    /// Valid values that are not NaN (min/max over only NaN give NaN).
    real: i64,
}

impl<T: Elem> Acc<T> {
    fn new() -> Self {
        Acc {
            sum: T::acc0(),
            min: T::MAXV,
            max: T::MINV,
            count: 0,
            real: 0,
        }
    }

    #[inline(always)]
    fn push(&mut self, x: T, op: Op) {
        self.count += 1;
        match op {
            Op::Sum | Op::Mean => self.sum = T::add(self.sum, x),
            Op::Min => {
                if !x.is_nan() {
                    self.real += 1;
                    if x < self.min {
                        self.min = x;
                    }
                }
            }
            Op::Max => {
                if !x.is_nan() {
                    self.real += 1;
                    if x > self.max {
                        self.max = x;
                    }
                }
            }
            Op::Count | Op::Select => {}
        }
    }

    fn merge(&mut self, o: &Acc<T>) {
        self.sum = T::merge(self.sum, o.sum);
        if o.min < self.min {
            self.min = o.min;
        }
        if o.max > self.max {
            self.max = o.max;
        }
        self.count += o.count;
        self.real += o.real;
    }

    fn result(&self, op: Op, out: &mut Vec<u8>) {
        let nan_only = self.count > 0 && self.real == 0;
        match op {
            Op::Count => out.extend_from_slice(&self.count.to_ne_bytes()),
            Op::Sum => T::fin(self.sum).put(out),
            Op::Mean => T::mean(self.sum, self.count).put(out),
            // Every valid value was NaN: nanmin gives NaN. T::fin(NaN) is NaN for floats and
            // unreachable for integers (they are never NaN).
            Op::Min if nan_only => T::fin(nan_acc::<T>()).put(out),
            Op::Max if nan_only => T::fin(nan_acc::<T>()).put(out),
            Op::Min => self.min.put(out),
            Op::Max => self.max.put(out),
            Op::Select => {}
        }
    }
}

/// An accumulator holding NaN (floats; integers never reach it).
fn nan_acc<T: Elem>() -> T::Acc {
    let mut a = T::acc0();
    // Adding NaN through the element type keeps this generic: a float's read of all-ones bits.
    let ones = [0xffu8; 8];
    a = T::add(a, T::read(&ones[..T::SIZE], false));
    a
}

/// Runs a validated spec over the (decompressed, unfiltered) bytes.
pub fn run(spec: &Spec, data: &[u8]) -> Result<Output, String> {
    match spec.dtype {
        DType::I32 => run_t::<i32>(spec, data),
        DType::I64 => run_t::<i64>(spec, data),
        DType::U32 => run_t::<u32>(spec, data),
        DType::U64 => run_t::<u64>(spec, data),
        DType::F32 => run_t::<f32>(spec, data),
        DType::F64 => run_t::<f64>(spec, data),
    }
}

/// Checks that the missing descriptor is representable in the spec's dtype.
pub fn check_missing(spec: &Spec) -> Result<(), String> {
    let m = spec.missing.as_ref();
    match spec.dtype {
        DType::I32 => Mask::<i32>::new(m).map(drop),
        DType::I64 => Mask::<i64>::new(m).map(drop),
        DType::U32 => Mask::<u32>::new(m).map(drop),
        DType::U64 => Mask::<u64>::new(m).map(drop),
        DType::F32 => Mask::<f32>::new(m).map(drop),
        DType::F64 => Mask::<f64>::new(m).map(drop),
    }
}

fn counts_out(op: Op, dtype: DType) -> &'static str {
    if op == Op::Count {
        "int64"
    } else {
        dtype.name()
    }
}

fn run_t<T: Elem>(spec: &Spec, data: &[u8]) -> Result<Output, String> {
    let n: usize = spec.shape.iter().product();
    if data.len() != n * T::SIZE {
        return Err(format!(
            "{} bytes do not hold shape {:?} of {}",
            data.len(),
            spec.shape,
            spec.dtype.name()
        ));
    }
    let mask = Mask::<T>::new(spec.missing.as_ref())?;
    let full = spec.axis.is_none() && spec.op != Op::Select;
    if full && spec.selection.is_none() {
        // Every element, in memory order (a full reduction does not depend on the order).
        let acc = fold_contiguous::<T>(data, spec.swap, &mask, spec.op);
        let mut bytes = Vec::with_capacity(8);
        acc.result(spec.op, &mut bytes);
        return Ok(Output {
            bytes,
            dtype: counts_out(spec.op, spec.dtype),
            shape: vec![],
            counts: vec![acc.count],
        });
    }
    strided::<T>(spec, data, &mask)
}

/// A full reduction fed in pieces as the object streams (`sum`, `mean`, `min`, `max`,
/// `count` over every element, no selection): these are associative, so each piece is folded
/// on its own and merged; the bytes of an element split between two pieces are carried over.
pub trait Sink: Send {
    /// Folds the next bytes.
    fn feed(&mut self, b: &[u8]);
    /// Bytes fed so far.
    fn len(&self) -> u64;
    /// The result once every byte was fed.
    fn finish(self: Box<Self>) -> Output;
}

/// A streaming fold for a spec `streams` accepts; Err names a missing value not representable.
pub fn sink(spec: &Spec) -> Result<Box<dyn Sink>, String> {
    Ok(match spec.dtype {
        DType::I32 => Box::new(Fold::<i32>::new(spec)?),
        DType::I64 => Box::new(Fold::<i64>::new(spec)?),
        DType::U32 => Box::new(Fold::<u32>::new(spec)?),
        DType::U64 => Box::new(Fold::<u64>::new(spec)?),
        DType::F32 => Box::new(Fold::<f32>::new(spec)?),
        DType::F64 => Box::new(Fold::<f64>::new(spec)?),
    })
}

/// Whether a spec can be folded as the object streams (see `Sink`).
pub fn streams(spec: &Spec) -> bool {
    spec.selection.is_none()
        && spec.axis.is_none()
        && matches!(spec.op, Op::Sum | Op::Mean | Op::Min | Op::Max | Op::Count)
}

struct Fold<T: Elem> {
    acc: Acc<T>,
    mask: Mask<T>,
    swap: bool,
    op: Op,
    dtype: DType,
    carry: [u8; 8],
    ncarry: usize,
    total: u64,
}

impl<T: Elem> Fold<T> {
    fn new(spec: &Spec) -> Result<Self, String> {
        Ok(Fold {
            acc: Acc::new(),
            mask: Mask::new(spec.missing.as_ref())?,
            swap: spec.swap,
            op: spec.op,
            dtype: spec.dtype,
            carry: [0; 8],
            ncarry: 0,
            total: 0,
        })
    }

    fn fold(&mut self, b: &[u8]) {
        let a = fold_contiguous::<T>(b, self.swap, &self.mask, self.op);
        self.acc.merge(&a);
    }
}

impl<T: Elem> Sink for Fold<T> {
    fn feed(&mut self, mut b: &[u8]) {
        self.total += b.len() as u64;
        if self.ncarry > 0 {
            let k = (T::SIZE - self.ncarry).min(b.len());
            self.carry[self.ncarry..self.ncarry + k].copy_from_slice(&b[..k]);
            self.ncarry += k;
            b = &b[k..];
            if self.ncarry < T::SIZE {
                return;
            }
            let one = self.carry;
            self.fold(&one[..T::SIZE]);
            self.ncarry = 0;
        }
        let whole = b.len() / T::SIZE * T::SIZE;
        self.fold(&b[..whole]);
        let rest = &b[whole..];
        self.carry[..rest.len()].copy_from_slice(rest);
        self.ncarry = rest.len();
    }

    fn len(&self) -> u64 {
        self.total
    }

    fn finish(self: Box<Self>) -> Output {
        let mut bytes = Vec::with_capacity(8);
        self.acc.result(self.op, &mut bytes);
        Output {
            bytes,
            dtype: counts_out(self.op, self.dtype),
            shape: vec![],
            counts: vec![self.acc.count],
        }
    }
}

/// Bytes the reduction itself allocates besides its input (per output element: its
/// accumulator, result and count), for the memory budget: an element-wise reduction
/// (`axis: []`) or a `select` of a large array needs several times the input.
pub fn working_bytes(spec: &Spec) -> u64 {
    if streams(spec) || (spec.axis.is_none() && spec.op != Op::Select) {
        return 64;
    }
    let k = spec.shape.len();
    let mut out = 1u64;
    for i in 0..k {
        let len = match &spec.selection {
            Some(sel) => {
                let [a, b, st] = sel[i];
                slice_indices(a, b, st, spec.shape[i] as i64).1 as u64
            }
            None => spec.shape[i] as u64,
        };
        let reduced = spec.op != Op::Select && spec.axis.as_ref().is_some_and(|a| a.contains(&i));
        if !reduced {
            out = out.saturating_mul(len);
        }
    }
    let per = if spec.op == Op::Select {
        16 // the values and their bytes
    } else {
        std::mem::size_of::<Acc<f64>>() as u64 + 16
    };
    out.saturating_mul(per)
}

/// The fold over all elements in memory order, in blocks of 8 lanes so it vectorises.
fn fold_contiguous<T: Elem>(data: &[u8], swap: bool, mask: &Mask<T>, op: Op) -> Acc<T> {
    let mut acc = Acc::<T>::new();
    if matches!(mask, Mask::None) && matches!(op, Op::Sum | Op::Mean | Op::Count) {
        let n = data.len() / T::SIZE;
        acc.count = n as i64;
        if op != Op::Count {
            let mut lanes = [T::acc0(); 8];
            let mut blocks = data.chunks_exact(8 * T::SIZE);
            for b in &mut blocks {
                for (l, e) in lanes.iter_mut().zip(b.chunks_exact(T::SIZE)) {
                    *l = T::add(*l, T::read(e, swap));
                }
            }
            for e in blocks.remainder().chunks_exact(T::SIZE) {
                lanes[0] = T::add(lanes[0], T::read(e, swap));
            }
            acc.sum = lanes.iter().fold(T::acc0(), |a, l| T::merge(a, *l));
        }
        return acc;
    }
    if matches!(mask, Mask::None) && matches!(op, Op::Min | Op::Max) {
        // Lanes again: min/max of 8 independent running values vectorise; NaN is skipped
        // by comparing (NaN < m is false) and counted apart.
        let mut lo = [T::MAXV; 8];
        let mut hi = [T::MINV; 8];
        let mut nan = 0i64;
        let max = op == Op::Max;
        let mut step = |i: usize, e: &[u8]| {
            let x = T::read(e, swap);
            if max {
                if x > hi[i] {
                    hi[i] = x;
                }
            } else if x < lo[i] {
                lo[i] = x;
            }
            nan += x.is_nan() as i64;
        };
        let mut blocks = data.chunks_exact(8 * T::SIZE);
        for b in &mut blocks {
            for (i, e) in b.chunks_exact(T::SIZE).enumerate() {
                step(i, e);
            }
        }
        for e in blocks.remainder().chunks_exact(T::SIZE) {
            step(0, e);
        }
        let n = (data.len() / T::SIZE) as i64;
        for i in 0..8 {
            if lo[i] < acc.min {
                acc.min = lo[i];
            }
            if hi[i] > acc.max {
                acc.max = hi[i];
            }
        }
        acc.count = n;
        acc.real = n - nan;
        return acc;
    }
    for e in data.chunks_exact(T::SIZE) {
        let x = T::read(e, swap);
        if mask.valid(x) {
            acc.push(x, op);
        }
    }
    acc
}

/// The general path: selection, axes, `select`, F order.
fn strided<T: Elem>(spec: &Spec, data: &[u8], mask: &Mask<T>) -> Result<Output, String> {
    let k = spec.shape.len();
    // Element strides of the stored layout.
    let mut st = vec![1i64; k];
    if spec.order_f {
        for i in 1..k {
            st[i] = st[i - 1] * spec.shape[i - 1] as i64;
        }
    } else {
        for i in (0..k.saturating_sub(1)).rev() {
            st[i] = st[i + 1] * spec.shape[i + 1] as i64;
        }
    }
    let mut base = 0i64;
    let mut lens = vec![0usize; k];
    let mut sst = vec![0i64; k];
    for i in 0..k {
        let (start, step, len) = match &spec.selection {
            Some(sel) => {
                let [a, b, s] = sel[i];
                let (start, len) = slice_indices(a, b, s, spec.shape[i] as i64);
                (start, s, len)
            }
            None => (0, 1, spec.shape[i] as i64),
        };
        lens[i] = len as usize;
        if len > 0 {
            base += start * st[i];
        }
        sst[i] = step * st[i];
    }
    let reduced: Vec<bool> = (0..k)
        .map(|i| match (&spec.axis, spec.op) {
            (_, Op::Select) => false,
            (None, _) => true,
            (Some(a), _) => a.contains(&i),
        })
        .collect();
    // Output strides (0 on reduced axes), laid out in the request's order.
    let mut ost = vec![0usize; k];
    let mut m = 1usize;
    let idx: Vec<usize> = if spec.order_f {
        (0..k).collect()
    } else {
        (0..k).rev().collect()
    };
    for &i in &idx {
        if !reduced[i] {
            ost[i] = m;
            m *= lens[i];
        }
    }
    let out_shape: Vec<usize> = (0..k).filter(|&i| !reduced[i]).map(|i| lens[i]).collect();
    let nout = m;
    let total: usize = lens.iter().product();
    let swap = spec.swap;
    let sz = T::SIZE;
    let read = |off: i64| T::read(&data[off as usize * sz..off as usize * sz + sz], swap);

    if spec.op == Op::Select {
        let mut vals = vec![T::MINV; nout];
        let mut count = 0i64;
        walk(&lens, &sst, &ost, base, total, |src, o| {
            let x = read(src);
            if mask.valid(x) {
                count += 1;
            }
            vals[o] = x;
        });
        let mut bytes = Vec::with_capacity(nout * sz);
        for v in vals {
            v.put(&mut bytes);
        }
        return Ok(Output {
            bytes,
            dtype: spec.dtype.name(),
            shape: lens,
            counts: vec![count],
        });
    }
    let mut accs: Vec<Acc<T>> = (0..nout).map(|_| Acc::new()).collect();
    let op = spec.op;
    walk(&lens, &sst, &ost, base, total, |src, o| {
        let x = read(src);
        if mask.valid(x) {
            accs[o].push(x, op);
        }
    });
    let mut bytes = Vec::with_capacity(nout * 8);
    let mut counts = Vec::with_capacity(nout);
    for a in &accs {
        a.result(op, &mut bytes);
        counts.push(a.count);
    }
    if spec.axis.is_none() {
        // A full reduction over a selection: one element; merge is a no-op here but keeps
        // the shape rule in one place.
        let mut one = Acc::<T>::new();
        for a in &accs {
            one.merge(a);
        }
        bytes.clear();
        one.result(op, &mut bytes);
        counts = vec![one.count];
    }
    Ok(Output {
        bytes,
        dtype: counts_out(op, spec.dtype),
        shape: out_shape,
        counts,
    })
}

/// Visits every selected element in logical C order: `f(source element, output element)`.
fn walk(
    lens: &[usize],
    sst: &[i64],
    ost: &[usize],
    base: i64,
    total: usize,
    mut f: impl FnMut(i64, usize),
) {
    if total == 0 {
        return;
    }
    let k = lens.len();
    let mut ix = vec![0usize; k];
    let (mut src, mut out) = (base, 0usize);
    let last = k - 1;
    loop {
        // The innermost dimension as a tight loop.
        let (s, o) = (sst[last], ost[last]);
        let (mut s0, mut o0) = (src, out);
        for _ in 0..lens[last] {
            f(s0, o0);
            s0 += s;
            o0 += o;
        }
        // Odometer over the outer dimensions.
        let mut d = last;
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            ix[d] += 1;
            src += sst[d];
            out += ost[d];
            if ix[d] < lens[d] {
                break;
            }
            src -= sst[d] * lens[d] as i64;
            out -= ost[d] * lens[d];
            ix[d] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(op: Op, shape: Vec<usize>) -> Spec {
        Spec {
            op,
            dtype: DType::I32,
            swap: false,
            shape,
            order_f: false,
            selection: None,
            axis: None,
            missing: None,
        }
    }

    fn i32s(v: &[i32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_ne_bytes()).collect()
    }

    fn as_i32(b: &[u8]) -> Vec<i32> {
        b.chunks_exact(4)
            .map(|c| i32::from_ne_bytes(c.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn slices_follow_numpy() {
        // list(range(10))[slice(a, b, s)]
        assert_eq!(slice_indices(0, 10, 1, 10), (0, 10));
        assert_eq!(slice_indices(-3, 100, 1, 10), (7, 3));
        assert_eq!(slice_indices(9, -11, -1, 10), (9, 10));
        assert_eq!(slice_indices(-1, 0, -3, 10), (9, 3));
        assert_eq!(slice_indices(5, 2, 1, 10), (5, 0));
        assert_eq!(slice_indices(100, -100, -2, 10), (9, 5));
    }

    #[test]
    fn axis_sum_c_and_f() {
        let data = i32s(&[0, 1, 2, 3, 4, 5]);
        let mut s = spec(Op::Sum, vec![2, 3]);
        s.axis = Some(vec![0]);
        let o = run(&s, &data).unwrap();
        assert_eq!(as_i32(&o.bytes), vec![3, 5, 7]);
        assert_eq!(o.counts, vec![2, 2, 2]);
        // F order: the array is [[0,2,4],[1,3,5]].
        s.order_f = true;
        let o = run(&s, &data).unwrap();
        assert_eq!(as_i32(&o.bytes), vec![1, 5, 9]);
        s.axis = Some(vec![1]);
        assert_eq!(as_i32(&run(&s, &data).unwrap().bytes), vec![6, 9]);
    }

    #[test]
    fn select_negative_stride_f_order_output() {
        let data = i32s(&[0, 1, 2, 3, 4, 5]);
        let mut s = spec(Op::Select, vec![2, 3]);
        s.selection = Some(vec![[0, 2, 1], [-1, -4, -1]]);
        let o = run(&s, &data).unwrap();
        assert_eq!(as_i32(&o.bytes), vec![2, 1, 0, 5, 4, 3]);
        assert_eq!(o.shape, vec![2, 3]);
        s.order_f = true; // [[0,2,4],[1,3,5]][:, ::-1] = [[4,2,0],[5,3,1]], written in F order
        assert_eq!(
            as_i32(&run(&s, &data).unwrap().bytes),
            vec![4, 5, 2, 3, 0, 1]
        );
    }

    #[test]
    fn nan_is_ignored_by_min_max_and_never_panics() {
        let v: Vec<u8> = [f32::NAN, 2.0, -1.0, f32::NAN]
            .iter()
            .flat_map(|x| x.to_ne_bytes())
            .collect();
        let mut s = spec(Op::Min, vec![4]);
        s.dtype = DType::F32;
        let o = run(&s, &v).unwrap();
        assert_eq!(f32::from_ne_bytes(o.bytes[..4].try_into().unwrap()), -1.0);
        s.op = Op::Max;
        s.shape = vec![2, 2];
        s.axis = Some(vec![1]);
        let o = run(&s, &v).unwrap();
        let r: Vec<f32> = o
            .bytes
            .chunks_exact(4)
            .map(|c| f32::from_ne_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(r[0], 2.0);
        assert_eq!(r[1], -1.0);
        let all_nan: Vec<u8> = [f32::NAN; 3].iter().flat_map(|x| x.to_ne_bytes()).collect();
        s.shape = vec![3];
        s.axis = None;
        let o = run(&s, &all_nan).unwrap();
        assert!(f32::from_ne_bytes(o.bytes[..4].try_into().unwrap()).is_nan());
    }

    #[test]
    fn empty_min_is_dtype_max_with_count_zero() {
        let data = i32s(&[1, 2, 3]);
        let mut s = spec(Op::Min, vec![3]);
        s.missing = Some(Missing::Min(Number::from(10)));
        let o = run(&s, &data).unwrap();
        assert_eq!(as_i32(&o.bytes), vec![i32::MAX]);
        assert_eq!(o.counts, vec![0]);
    }

    #[test]
    fn streaming_fold_carries_split_elements() {
        let v: Vec<f64> = (0..1000).map(|i| i as f64 - 300.5).collect();
        let data: Vec<u8> = v.iter().flat_map(|x| x.to_ne_bytes()).collect();
        for op in [Op::Sum, Op::Min, Op::Max, Op::Count] {
            let mut s = spec(op, vec![1000]);
            s.dtype = DType::F64;
            s.missing = Some(Missing::Range(Number::from(-100), Number::from(400)));
            let whole = run(&s, &data).unwrap();
            let mut k = sink(&s).unwrap();
            // Pieces of 1, 3, 7, 13... bytes: every element is split somewhere.
            let (mut at, mut step) = (0, 1);
            while at < data.len() {
                let end = (at + step).min(data.len());
                k.feed(&data[at..end]);
                at = end;
                step = step * 2 + 1;
            }
            assert_eq!(k.len(), data.len() as u64);
            let got = k.finish();
            assert_eq!(got.bytes, whole.bytes, "{op:?}");
            assert_eq!(got.counts, whole.counts);
        }
    }

    /// The fold's own throughput (no transfer), printed for tests/benchmarks/bench_activestorage.py:
    /// `cargo test --release -p roar-proxy fold_throughput -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn fold_throughput() {
        let n = 64 << 20; // 256 MiB of float32
        let data: Vec<u8> = (0..n)
            .flat_map(|i| ((i % 1000) as f32 - 500.0).to_ne_bytes())
            .collect();
        for op in [Op::Sum, Op::Min, Op::Max, Op::Count] {
            let mut s = spec(op, vec![n]);
            s.dtype = DType::F32;
            let mut best = f64::MAX;
            for _ in 0..5 {
                let t = std::time::Instant::now();
                std::hint::black_box(run(&s, std::hint::black_box(&data)).unwrap());
                best = best.min(t.elapsed().as_secs_f64());
            }
            println!(
                "fold {} float32 {} MiB: {:.2} GB/s",
                op.name(),
                data.len() >> 20,
                data.len() as f64 / best / 1e9
            );
        }
    }

    #[test]
    fn wrong_length_is_an_error() {
        assert!(run(&spec(Op::Sum, vec![4]), &i32s(&[1, 2, 3])).is_err());
    }
}
