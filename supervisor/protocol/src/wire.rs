//! The wire protocol of `vmfleet serve`'s control socket, shared by the daemon (the supervisor's
//! `serve`) and its client (`ctl`).
//!
//! Newline-delimited JSON over a Unix stream socket: the client writes one request object per
//! line, the daemon answers each with one reply object per line, in order. A connection may carry
//! any number of requests.
//!
//! ```text
//! {"op":"list"}                                  → array of VmInfo
//! {"op":"create","spec":"[[vm]]\nname = \"a\"\n"} → array of ModelView (TOML: one or more [[vm]])
//! {"op":"start","vm":"a"}                        → StatusView {"vm":"a","state":"running",...}
//! {"op":"pause","vm":"a"}   resume, stop, wait likewise (wait: once the VM has exited)
//! {"op":"remove","vm":"a"}                       → the VM's final report
//! {"op":"model","vm":"a"}                        → ModelView (CPU model and drift report)
//! {"op":"set-model","vm":"a","hide":["avx2"]}    → ModelView (refused by the lock once a has run)
//! {"op":"set-model","vm":"a","set":["ID_AA64ISAR0_EL1.AES=0","MIDR_EL1=0x410fd4f1"]}   (arm64)
//! {"op":"stop-all"}                              → array of VmInfo (after stopping)
//! {"op":"shutdown"}                              → the fleet's final report; the daemon then exits
//!
//! {"ok":true,"result":...}    or    {"ok":false,"error":"what was wrong"}
//! ```
//!
//! A request line longer than [`MAX_REQUEST_BYTES`] gets an error reply and the connection is
//! closed (the rest of the line cannot be told apart from a next request). Every other bad line
//! (not UTF-8, not JSON, not an object, a key twice in one object, unknown op, missing or mistyped
//! field, unknown field) gets an error reply that names the problem, and the connection stays
//! usable. Parsing never panics.
//!
//! The JSON is read and written by hand, not derived: `Request`'s serde form is its trace form
//! (`trace_form.rs`). Where the socket lives and who may connect to it is the supervisor's
//! `socket` module's.

use crate::{Op, Request};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

/// The longest request line the daemon reads (without its newline).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Every op a client may send, in the order error messages list them (the names of [`Op::WIRE`]).
pub const OPS: &[&str] = &{
    let mut names = [""; Op::WIRE.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = Op::WIRE[i].name();
        i += 1;
    }
    names
};

/// What kind of JSON value this is, for error messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Request {
    /// Parse one request line (without its newline). The error is the text of the error reply.
    pub fn parse(line: &[u8]) -> Result<Request, String> {
        let text = std::str::from_utf8(line).map_err(|e| {
            format!(
                "the request is not UTF-8 text (invalid byte at offset {})",
                e.valid_up_to()
            )
        })?;
        if text.trim().is_empty() {
            return Err(format!(
                "empty request: send one JSON object per line, such as {}",
                Op::List.example()
            ));
        }
        let Unique(value) = serde_json::from_str(text).map_err(|e| {
            if e.is_data() {
                // Only `Unique` raises data errors: a key twice, named with where.
                e.to_string()
            } else {
                format!(
                    "the request is not JSON: {e}; send one JSON object per line, such as {}",
                    Op::List.example()
                )
            }
        })?;
        let Value::Object(mut object) = value else {
            return Err(format!(
                "a request must be a JSON object such as {}, not {}",
                Op::List.example(),
                kind(&value)
            ));
        };
        let op = match object.remove("op") {
            Some(Value::String(op)) => op,
            Some(other) => {
                return Err(format!(
                    "field `op` must be a string (one of {}), not {}",
                    OPS.join(", "),
                    kind(&other)
                ));
            }
            None => {
                return Err(format!(
                    "the request has no field `op`; expected one of {}",
                    OPS.join(", ")
                ));
            }
        };
        let Some(which) = Op::on_wire(&op) else {
            return Err(format!(
                "unknown op `{op}`; expected one of {}",
                OPS.join(", ")
            ));
        };
        let takes = which.fields();
        if let Some(unknown) = object.keys().find(|k| !takes.contains(&k.as_str())) {
            return Err(format!(
                "op `{op}` has no field `{unknown}`; {}: {}",
                match takes {
                    [] => "it takes no fields".to_string(),
                    _ => format!(
                        "it takes {}",
                        takes
                            .iter()
                            .map(|f| format!("`{f}`"))
                            .collect::<Vec<_>>()
                            .join(" and ")
                    ),
                },
                which.example()
            ));
        }
        let mut fields = Fields {
            op: which,
            object: &mut object,
        };
        Ok(match which {
            Op::List => Request::List,
            Op::Create => Request::Create {
                spec: fields.string("spec")?,
            },
            Op::Start => Request::Start {
                vm: fields.string("vm")?,
                paused: fields.optional_bool("paused")?,
            },
            Op::Pause => Request::Pause {
                vm: fields.string("vm")?,
            },
            Op::Resume => Request::Resume {
                vm: fields.string("vm")?,
            },
            Op::Stop => Request::Stop {
                vm: fields.string("vm")?,
            },
            Op::Wait => Request::Wait {
                vm: fields.string("vm")?,
            },
            Op::Remove => Request::Remove {
                vm: fields.string("vm")?,
            },
            Op::Model => Request::Model {
                vm: fields.string("vm")?,
            },
            // `hide` may be left out only by a request that has `set` (an arm64 one).
            Op::SetModel if fields.object.contains_key("set") => Request::SetModel {
                vm: fields.string("vm")?,
                hide: match fields.object.contains_key("hide") {
                    true => fields.strings("hide")?,
                    false => Vec::new(),
                },
                set: fields.strings("set")?,
            },
            Op::SetModel if !fields.object.contains_key("hide") => {
                // Neither form: name both, an x86 VM takes `hide`, an arm64 VM `set`.
                return Err(format!(
                    "op `set-model` needs field `hide` (x86: the features to hide) or `set` \
                     (arm64: REGISTER[.FIELD]=VALUE writes): {} or {}",
                    Op::SetModel.example(),
                    SET_MODEL_ARM64_EXAMPLE
                ));
            }
            Op::SetModel => Request::SetModel {
                vm: fields.string("vm")?,
                hide: fields.strings("hide")?,
                set: Vec::new(),
            },
            Op::StopAll => Request::StopAll,
            Op::Shutdown => Request::Shutdown,
            // `Op::on_wire` never names it: the socket cannot ask a daemon to leave its VMs to
            // the process's exit other than through `shutdown`.
            Op::ShutdownForExit => return Err(format!("unknown op `{op}`")),
        })
    }

    /// The request as one line, newline included: `{"op":…}` then its fields in the order
    /// [`Op::fields`] lists them (`paused` only when true), which [`Request::parse`] reads back.
    /// (`shutdown-for-exit` is written too, for logs, but no daemon accepts it.)
    pub fn to_line(&self) -> String {
        let mut line = String::from("{");
        push_field(&mut line, "op", self.op());
        match self {
            Request::Create { spec } => push_field(&mut line, "spec", spec),
            Request::Start { vm, paused } => {
                push_field(&mut line, "vm", vm);
                if *paused {
                    line.push_str(",\"paused\":true");
                }
            }
            Request::Pause { vm }
            | Request::Resume { vm }
            | Request::Stop { vm }
            | Request::Wait { vm }
            | Request::Remove { vm }
            | Request::Model { vm } => push_field(&mut line, "vm", vm),
            Request::SetModel { vm, hide, set } => {
                push_field(&mut line, "vm", vm);
                push_field(&mut line, "hide", hide);
                if !set.is_empty() {
                    push_field(&mut line, "set", set);
                }
            }
            Request::List | Request::StopAll | Request::Shutdown | Request::ShutdownForExit => {}
        }
        line.push_str("}\n");
        line
    }
}

/// Append `"key":value` (with a comma unless it is the object's first field) to a JSON object
/// being written.
fn push_field<T: Serialize + ?Sized>(line: &mut String, key: &str, value: &T) {
    if !line.ends_with('{') {
        line.push(',');
    }
    // Strings and lists of strings always serialize; `null` would be refused by `parse`, never
    // misread.
    let value = serde_json::to_string(value).unwrap_or_else(|_| "null".to_string());
    line.push_str(&format!("\"{key}\":{value}"));
}

/// A JSON value read like `serde_json::Value`, except that an object with the same key twice is an
/// error (at any depth). `Value` keeps the last of them silently, so `{"op":"list","op":"shutdown"}`
/// would shut the daemon down while a reader of the line (a log, a proxy that checks requests)
/// sees a `list`. serde_json's nesting limit still applies: deep nesting is an error, not a
/// stack overflow.
struct Unique(Value);

impl<'de> Deserialize<'de> for Unique {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Unique, D::Error> {
        deserializer.deserialize_any(UniqueVisitor).map(Unique)
    }
}

struct UniqueVisitor;

impl<'de> Visitor<'de> for UniqueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::from(n))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::from(n))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Value, E> {
        // Not finite is impossible from JSON text; `Value::from` makes it null, not a panic.
        Ok(Value::from(n))
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Unique(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format!(
                    "the request has the key `{}` twice in one object (each key may appear once)",
                    shown(&key)
                )));
            }
            let Unique(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// A key for an error message: escaped, and cut short if long (a line may be 64 KiB).
fn shown(key: &str) -> String {
    const MAX: usize = 40;
    let escaped: String = key.escape_debug().collect();
    match escaped.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}...", &escaped[..at]),
        None => escaped,
    }
}

/// How an arm64 `set-model` request looks, for error messages (`Op::example` shows the x86 form).
const SET_MODEL_ARM64_EXAMPLE: &str =
    r#"{"op":"set-model","vm":"NAME","set":["ID_AA64ISAR0_EL1.AES=0"]}"#;

/// The fields of one request object, taken out with type checks.
struct Fields<'a> {
    op: Op,
    object: &'a mut Map<String, Value>,
}

impl Fields<'_> {
    fn take(&mut self, field: &str, what: &str) -> Result<Value, String> {
        self.object.remove(field).ok_or_else(|| {
            format!(
                "op `{}` needs field `{field}` ({what}): {}",
                self.op.name(),
                self.op.example()
            )
        })
    }

    fn string(&mut self, field: &str) -> Result<String, String> {
        let what = if field == "vm" {
            "a VM name"
        } else {
            "a string"
        };
        match self.take(field, what)? {
            Value::String(s) => Ok(s),
            other => Err(format!(
                "field `{field}` of op `{}` must be a string, not {}",
                self.op.name(),
                kind(&other)
            )),
        }
    }

    /// A boolean that may be left out (then `false`).
    fn optional_bool(&mut self, field: &str) -> Result<bool, String> {
        match self.object.remove(field) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(b),
            Some(other) => Err(format!(
                "field `{field}` of op `{}` must be true or false, not {}",
                self.op.name(),
                kind(&other)
            )),
        }
    }

    fn strings(&mut self, field: &str) -> Result<Vec<String>, String> {
        let items = match self.take(field, "an array of strings")? {
            Value::Array(items) => items,
            other => {
                return Err(format!(
                    "field `{field}` of op `{}` must be an array of strings, not {}",
                    self.op.name(),
                    kind(&other)
                ));
            }
        };
        items
            .into_iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => Ok(s),
                other => Err(format!(
                    "field `{field}` of op `{}` must be an array of strings; element {i} is {}",
                    self.op.name(),
                    kind(&other)
                )),
            })
            .collect()
    }
}

/// One reply line: `{"ok":true,"result":...}` or `{"ok":false,"error":"..."}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request was carried out; then `result` is set, else `error`.
    pub ok: bool,
    /// The answer (its shape depends on the op, see the module documentation); only when `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// What was wrong, for the operator (`vmfleet ctl` prints it); only when not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    /// A successful reply carrying `result`.
    pub fn ok(result: Value) -> Response {
        Response {
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    /// An error reply saying `message`.
    pub fn error(message: impl Into<String>) -> Response {
        Response {
            ok: false,
            result: None,
            error: Some(message.into()),
        }
    }

    /// A successful reply carrying `result` serialized, or an error reply if it cannot be.
    pub fn from_result<T: Serialize>(result: &T) -> Response {
        match serde_json::to_value(result) {
            Ok(value) => Response::ok(value),
            Err(e) => Response::error(format!("the daemon could not encode its reply: {e}")),
        }
    }

    /// The reply as one line, newline included.
    pub fn to_line(&self) -> String {
        let mut line = serde_json::to_string(self).unwrap_or_else(|e| {
            format!(r#"{{"ok":false,"error":"the daemon could not encode its reply: {e}"}}"#)
        });
        line.push('\n');
        line
    }
}

/// The result of `start`, `pause`, `resume`, `stop` and `wait`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusView {
    /// The VM's name.
    pub vm: String,
    /// The VM's lifecycle, as `list` shows it (`running`, `paused`, `exited (stopped)`...).
    pub state: String,
    /// The same for machines (snake_case): `running`, `paused`, `exited`... (see `VmInfo`).
    #[serde(default)]
    pub phase: String,
    /// Why it exited, once it has: `halted`, `stopped`, `failed`, `removed_before_start`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_reason: Option<String>,
    /// Guest exits of the vCPUs that have ended.
    pub exits: u64,
}

/// What one read of at most `MAX_REQUEST_BYTES + 1` bytes up to a newline produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A whole request line, without its line ending.
    Line(&'a [u8]),
    /// The line is longer than [`MAX_REQUEST_BYTES`]: reply with [`too_long`] and close.
    TooLong,
    /// The peer closed the connection in the middle of a line: nothing to answer.
    Unterminated,
}

/// Classify what a bounded `read_until(b'\n')` put in `buf` (which is not empty).
pub fn frame(buf: &[u8]) -> Frame<'_> {
    match buf.strip_suffix(b"\n") {
        Some(line) => Frame::Line(line.strip_suffix(b"\r").unwrap_or(line)),
        None if buf.len() > MAX_REQUEST_BYTES => Frame::TooLong,
        None => Frame::Unterminated,
    }
}

/// The error reply to a line longer than [`MAX_REQUEST_BYTES`].
pub fn too_long() -> Response {
    Response::error(format!(
        "the request is longer than {MAX_REQUEST_BYTES} bytes; closing the connection"
    ))
}

#[cfg(test)]
mod tests;
