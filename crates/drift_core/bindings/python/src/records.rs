//! `decode_prediction_batch`: the monitor's `IngestPredictionsRequest` (protobuf wire format) read
//! column by column, without a Python object per record or per feature.
//!
//! Only what the monitor stores is read (`finpredict.monitor.v1.PredictionRecord`: request_id=1,
//! entity_id=2, model=3 {name=1, version=2}, variant=4, features=5 map<string, FeatureValue
//! {number=1 | category=2}>, score=6, threshold=7, latency_ms=8, trace_id=9, time=10 {seconds=1,
//! nanos=2}, reason_codes=11 {code=1, feature=2, contribution=3, description=4}, rollout_id=14,
//! experiment_id=15); a record with a review kind (12) is left to protobuf; review_detail=13 is
//! only checked. Fields are read in order into the same record, so a repeated field or message
//! merges as protobuf does (the last value wins). Anything this reader is not sure of (malformed
//! bytes, groups, invalid UTF-8, a feature sent both as a number and as a category, and any field
//! number it does not know, in any of these messages: a field added to the contract later is never
//! dropped silently) gives `None`: the caller then decodes the request with protobuf itself, which
//! has the final word.

use numpy::IntoPyArray;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};
use std::collections::HashMap;

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn varint(&mut self) -> Option<u64> {
        let mut out: u64 = 0;
        for shift in (0..70).step_by(7) {
            let b = *self.buf.get(self.pos)?;
            self.pos += 1;
            if shift < 64 {
                out |= u64::from(b & 0x7f) << shift;
            }
            if b & 0x80 == 0 {
                return Some(out);
            }
        }
        None
    }

    fn fixed64(&mut self) -> Option<u64> {
        let end = self.pos.checked_add(8)?;
        let bytes = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(u64::from_le_bytes(bytes.try_into().ok()?))
    }

    /// A tag or a length: protobuf reads those as at most 5 bytes and 32 bits.
    fn varint32(&mut self) -> Option<u32> {
        let start = self.pos;
        let v = self.varint()?;
        (self.pos - start <= 5).then_some(())?;
        u32::try_from(v).ok()
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = self.varint32()?;
        (len <= i32::MAX as u32).then_some(())?;
        let len = usize::try_from(len).ok()?;
        let end = self.pos.checked_add(len)?;
        let out = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(out)
    }

    /// The next field's (number, wire type), or None at a malformed tag.
    fn tag(&mut self) -> Option<(u32, u8)> {
        let t = self.varint32()?;
        let field = t >> 3;
        if field == 0 {
            return None;
        }
        Some((field, (t & 7) as u8))
    }
}

/// A field this reader does not know: the whole request is left to protobuf (which keeps or
/// stores what it knows of it), rather than the field being skipped and lost.
fn unknown<T>() -> Option<T> {
    None
}

fn text(b: &[u8]) -> Option<&str> {
    std::str::from_utf8(b).ok()
}

/// A scalar field of `wire` type, checked: a mismatch (e.g. a varint where a string belongs) is
/// left to protobuf.
fn expect(wire: u8, want: u8) -> Option<()> {
    (wire == want).then_some(())
}

#[derive(Clone, Copy)]
enum Value<'a> {
    Missing,
    Number(f64),
    Category(&'a str),
}

#[derive(Default)]
struct Record<'a> {
    request_id: &'a str,
    entity_id: &'a str,
    model: &'a str,
    version: i64,
    variant: &'a str,
    score: f64,
    threshold: f64,
    latency_ms: f64,
    trace_id: &'a str,
    rollout_id: &'a str,
    experiment_id: &'a str,
    seconds: i64,
    nanos: i64,
    reasons: Vec<(&'a str, &'a str, f64, &'a str)>,
}

fn model_ref<'a>(r: &mut Reader<'a>, rec: &mut Record<'a>) -> Option<()> {
    while !r.done() {
        match r.tag()? {
            (1, w) => {
                expect(w, 2)?;
                rec.model = text(r.bytes()?)?;
            }
            (2, w) => {
                expect(w, 0)?;
                rec.version = r.varint()? as i64;
            }
            _ => return unknown(),
        }
    }
    Some(())
}

fn timestamp(r: &mut Reader<'_>, rec: &mut Record<'_>) -> Option<()> {
    while !r.done() {
        match r.tag()? {
            (1, w) => {
                expect(w, 0)?;
                rec.seconds = r.varint()? as i64;
            }
            (2, w) => {
                expect(w, 0)?;
                rec.nanos = i64::from(r.varint()? as i32);
            }
            _ => return unknown(),
        }
    }
    Some(())
}

fn reason<'a>(r: &mut Reader<'a>) -> Option<(&'a str, &'a str, f64, &'a str)> {
    let mut out = ("", "", 0.0, "");
    while !r.done() {
        match r.tag()? {
            (1, w) => {
                expect(w, 2)?;
                out.0 = text(r.bytes()?)?;
            }
            (2, w) => {
                expect(w, 2)?;
                out.1 = text(r.bytes()?)?;
            }
            (3, w) => {
                expect(w, 1)?;
                out.2 = f64::from_bits(r.fixed64()?);
            }
            (4, w) => {
                expect(w, 2)?;
                out.3 = text(r.bytes()?)?;
            }
            _ => return unknown(),
        }
    }
    Some(out)
}

fn feature_value<'a>(r: &mut Reader<'a>, value: &mut Value<'a>) -> Option<()> {
    while !r.done() {
        match r.tag()? {
            (1, w) => {
                expect(w, 1)?;
                *value = Value::Number(f64::from_bits(r.fixed64()?));
            }
            (2, w) => {
                expect(w, 2)?;
                *value = Value::Category(text(r.bytes()?)?);
            }
            _ => return unknown(),
        }
    }
    Some(())
}

fn map_entry<'a>(r: &mut Reader<'a>) -> Option<(&'a str, Value<'a>)> {
    let mut key = "";
    let mut value = Value::Missing;
    while !r.done() {
        match r.tag()? {
            (1, w) => {
                expect(w, 2)?;
                key = text(r.bytes()?)?;
            }
            (2, w) => {
                expect(w, 2)?;
                // a value given twice merges into one message
                feature_value(&mut Reader::new(r.bytes()?), &mut value)?;
            }
            // protobuf keeps a map entry with unknown fields aside as unknown: its path decides
            _ => return None,
        }
    }
    Some((key, value))
}

/// One feature's column: numbers (NaN: missing) or categories, never both.
struct Column<'a> {
    numbers: Vec<f64>,
    categories: Vec<Option<&'a str>>,
    has_number: bool,
    has_category: bool,
}

struct Batch<'a> {
    records: Vec<Record<'a>>,
    names: Vec<&'a str>,
    columns: Vec<Column<'a>>,
}

/// Where the features go: their columns, found by name (and first by the position the name had in
/// the record before: a sender writes a map's keys in the same order for the same key set).
struct Features<'a> {
    index: HashMap<&'a str, usize>,
    names: Vec<&'a str>,
    columns: Vec<Column<'a>>,
    guess: Vec<usize>,
}

impl<'a> Features<'a> {
    fn column(&mut self, position: usize, name: &'a str) -> usize {
        if let Some(&at) = self.guess.get(position) {
            if self.names[at] == name {
                return at;
            }
        }
        let names = &mut self.names;
        let columns = &mut self.columns;
        let at = *self.index.entry(name).or_insert_with(|| {
            names.push(name);
            columns.push(Column {
                numbers: Vec::new(),
                categories: Vec::new(),
                has_number: false,
                has_category: false,
            });
            columns.len() - 1
        });
        if position < self.guess.len() {
            self.guess[position] = at;
        } else {
            self.guess.push(at);
        }
        at
    }
}

fn record<'a>(r: &mut Reader<'a>, row: usize, features: &mut Features<'a>) -> Option<Record<'a>> {
    let mut rec = Record::default();
    let mut position = 0;
    while !r.done() {
        match r.tag()? {
            (1, w) => {
                expect(w, 2)?;
                rec.request_id = text(r.bytes()?)?;
            }
            (2, w) => {
                expect(w, 2)?;
                rec.entity_id = text(r.bytes()?)?;
            }
            (3, w) => {
                expect(w, 2)?;
                model_ref(&mut Reader::new(r.bytes()?), &mut rec)?;
            }
            (4, w) => {
                expect(w, 2)?;
                rec.variant = text(r.bytes()?)?;
            }
            (5, w) => {
                expect(w, 2)?;
                let (name, value) = map_entry(&mut Reader::new(r.bytes()?))?;
                let at = features.column(position, name);
                position += 1;
                let col = &mut features.columns[at];
                if col.numbers.len() <= row {
                    col.numbers.resize(row + 1, f64::NAN);
                    col.categories.resize(row + 1, None);
                }
                // a key given twice in one map: the last entry wins
                col.numbers[row] = f64::NAN;
                col.categories[row] = None;
                match value {
                    Value::Missing => {}
                    Value::Number(x) => {
                        col.has_number = true;
                        col.numbers[row] = x;
                    }
                    Value::Category(c) => {
                        col.has_category = true;
                        col.categories[row] = Some(c);
                    }
                }
            }
            (6, w) => {
                expect(w, 1)?;
                rec.score = f64::from_bits(r.fixed64()?);
            }
            (7, w) => {
                expect(w, 1)?;
                rec.threshold = f64::from_bits(r.fixed64()?);
            }
            (8, w) => {
                expect(w, 1)?;
                rec.latency_ms = f64::from_bits(r.fixed64()?);
            }
            (9, w) => {
                expect(w, 2)?;
                rec.trace_id = text(r.bytes()?)?;
            }
            (10, w) => {
                expect(w, 2)?;
                timestamp(&mut Reader::new(r.bytes()?), &mut rec)?;
            }
            (11, w) => {
                expect(w, 2)?;
                let reason = reason(&mut Reader::new(r.bytes()?))?;
                rec.reasons.push(reason);
            }
            (12, w) => {
                // an edge case for the review queue (refused, canary fallback): protobuf's path
                expect(w, 0)?;
                if r.varint()? != 0 {
                    return None;
                }
            }
            (13, w) => {
                expect(w, 2)?;
                text(r.bytes()?)?; // review_detail: not stored, but a string all the same
            }
            (14, w) => {
                expect(w, 2)?;
                rec.rollout_id = text(r.bytes()?)?;
            }
            (15, w) => {
                expect(w, 2)?;
                rec.experiment_id = text(r.bytes()?)?;
            }
            _ => return unknown(),
        }
    }
    Some(rec)
}

fn batch(data: &[u8]) -> Option<Batch<'_>> {
    let mut r = Reader::new(data);
    let mut records = Vec::new();
    let mut features = Features {
        index: HashMap::new(),
        names: Vec::new(),
        columns: Vec::new(),
        guess: Vec::new(),
    };
    while !r.done() {
        match r.tag()? {
            (1, w) => {
                expect(w, 2)?;
                let row = records.len();
                records.push(record(&mut Reader::new(r.bytes()?), row, &mut features)?);
            }
            _ => return unknown(),
        }
    }
    let n = records.len();
    let Features {
        names, mut columns, ..
    } = features;
    for col in &mut columns {
        if col.has_number && col.has_category {
            return None; // mixed kinds: protobuf's path keeps numbers as text, record by record
        }
        col.numbers.resize(n, f64::NAN);
        col.categories.resize(n, None);
    }
    Some(Batch {
        records,
        names,
        columns,
    })
}

fn strings<'py, 'a>(
    py: Python<'py>,
    records: &[Record<'a>],
    get: impl Fn(&Record<'a>) -> &'a str,
) -> PyResult<Bound<'py, PyList>> {
    PyList::new(py, records.iter().map(|r| PyString::new(py, get(r))))
}

/// The records of a serialized `IngestPredictionsRequest` as columns, or None when they are to be
/// decoded by protobuf (see the module documentation). The dict holds `n`; lists of str
/// `request_id`, `entity_id`, `model`, `variant`, `trace_id`, `rollout_id`, `experiment_id`; int64 arrays `version`, `seconds`,
/// `nanos`; float64 arrays `score`, `threshold`, `latency_ms`; `reason_codes`, a list of
/// `(row, code, feature, contribution, description)`; and `features`, a list of `(name, column)`
/// where a column is a float64 array (NaN: missing) or a list of str or None.
#[pyfunction]
pub fn decode_prediction_batch<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyBytes>,
) -> PyResult<Option<Bound<'py, PyDict>>> {
    let bytes = data.as_bytes();
    let Some(b) = py.detach(|| batch(bytes)) else {
        return Ok(None);
    };
    let out = PyDict::new(py);
    let recs = &b.records;
    out.set_item("n", recs.len())?;
    out.set_item("request_id", strings(py, recs, |r| r.request_id)?)?;
    out.set_item("entity_id", strings(py, recs, |r| r.entity_id)?)?;
    out.set_item("model", strings(py, recs, |r| r.model)?)?;
    out.set_item("variant", strings(py, recs, |r| r.variant)?)?;
    out.set_item("trace_id", strings(py, recs, |r| r.trace_id)?)?;
    out.set_item("rollout_id", strings(py, recs, |r| r.rollout_id)?)?;
    out.set_item("experiment_id", strings(py, recs, |r| r.experiment_id)?)?;
    let ints = |get: fn(&Record<'_>) -> i64| recs.iter().map(get).collect::<Vec<i64>>();
    let floats = |get: fn(&Record<'_>) -> f64| recs.iter().map(get).collect::<Vec<f64>>();
    out.set_item("version", ints(|r| r.version).into_pyarray(py))?;
    out.set_item("seconds", ints(|r| r.seconds).into_pyarray(py))?;
    out.set_item("nanos", ints(|r| r.nanos).into_pyarray(py))?;
    out.set_item("score", floats(|r| r.score).into_pyarray(py))?;
    out.set_item("threshold", floats(|r| r.threshold).into_pyarray(py))?;
    out.set_item("latency_ms", floats(|r| r.latency_ms).into_pyarray(py))?;
    let reasons = PyList::empty(py);
    for (row, rec) in recs.iter().enumerate() {
        for &(code, feature, contribution, description) in &rec.reasons {
            reasons.append((row, code, feature, contribution, description))?;
        }
    }
    out.set_item("reason_codes", reasons)?;
    let features = PyList::empty(py);
    for (name, col) in b.names.iter().zip(b.columns) {
        if col.has_category {
            features.append((*name, PyList::new(py, col.categories)?))?;
        } else {
            features.append((*name, col.numbers.into_pyarray(py)))?;
        }
    }
    out.set_item("features", features)?;
    Ok(Some(out))
}
