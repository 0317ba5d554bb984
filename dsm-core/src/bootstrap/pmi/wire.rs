//! The PMI-1 wire protocol: pure code, no I/O.
//!
//! PMI-1 (the "simple" PMI that MPICH's Hydra speaks through `PMI_FD`) is a line protocol: each
//! request and each reply is one line of space-separated `key=value` words ending in `\n`, the
//! first word being `cmd=NAME`. For example:
//!
//! ```text
//! > cmd=init pmi_version=1 pmi_subversion=1
//! < cmd=response_to_init pmi_version=1 pmi_subversion=1 rc=0
//! > cmd=get kvsname=kvs_1_0 key=dsm.ep.3
//! < cmd=get_result rc=0 msg=success value=1.3132372e302e302e313a3430303031
//! ```
//!
//! Keys and values can hold neither spaces, `=` nor line ends, so the runtime puts only
//! hexadecimal and decimal text in the key-value space. A reply is checked here against the
//! command it answers ([`Reply::expect`]); everything the server sends is length-bounded
//! ([`MAX_LINE`]) and a malformed line is a [`DecodeError`], never a panic.

/// Longest line accepted from the PMI server, `\n` included. Hydra's own limit is 1024.
pub const MAX_LINE: usize = 4096;
/// Most `key=value` words accepted in one reply.
pub const MAX_FIELDS: usize = 32;

/// Why a line from the PMI server is not a valid reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed PMI reply: {0}")]
pub struct DecodeError(pub String);

/// Why a request cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot encode a PMI request: {0}")]
pub struct EncodeError(pub String);

/// A word a key or value may be: printable ASCII without space or `=`.
fn is_word(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_graphic() && b != b'=')
}

/// Encodes the request `cmd=NAME key=value ...` with its line end.
///
/// # Errors
/// [`EncodeError`] when a name, key or value is empty (names and keys), or holds a space, an `=`
/// or a non-printable byte: the server would split or misread it.
pub fn encode(cmd: &str, fields: &[(&str, &str)]) -> Result<String, EncodeError> {
    if cmd.is_empty() || !is_word(cmd) {
        return Err(EncodeError(format!("command name {cmd:?}")));
    }
    let mut line = format!("cmd={cmd}");
    for (k, v) in fields {
        if k.is_empty() || !is_word(k) {
            return Err(EncodeError(format!("key {k:?}")));
        }
        if !is_word(v) {
            return Err(EncodeError(format!("value {v:?} of {k}")));
        }
        line.push(' ');
        line.push_str(k);
        line.push('=');
        line.push_str(v);
    }
    line.push('\n');
    if line.len() > MAX_LINE {
        return Err(EncodeError(format!(
            "a line of {} bytes (at most {MAX_LINE})",
            line.len()
        )));
    }
    Ok(line)
}

/// A reply from the PMI server: its command and its `key=value` fields, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The `cmd=` word.
    pub cmd: String,
    /// The other words.
    pub fields: Vec<(String, String)>,
}

impl Reply {
    /// The value of `key`, if the reply has it.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key`, or an error naming the reply.
    ///
    /// # Errors
    /// [`DecodeError`] when the field is missing.
    pub fn need(&self, key: &str) -> Result<&str, DecodeError> {
        self.get(key)
            .ok_or_else(|| DecodeError(format!("`cmd={}` without `{key}=`", self.cmd)))
    }

    /// A numeric field.
    ///
    /// # Errors
    /// [`DecodeError`] when the field is missing or not a decimal integer.
    pub fn number(&self, key: &str) -> Result<i64, DecodeError> {
        let v = self.need(key)?;
        v.parse()
            .map_err(|_| DecodeError(format!("`{key}={v}` in `cmd={}` is not a number", self.cmd)))
    }

    /// Checks that this reply answers with `cmd` and, when it carries an `rc`, that it is 0.
    ///
    /// # Errors
    /// [`DecodeError`] for another command; [`DecodeError`] carrying the server's `msg` for a
    /// non-zero `rc`.
    pub fn expect(self, cmd: &str) -> Result<Reply, DecodeError> {
        if self.cmd != cmd {
            return Err(DecodeError(format!(
                "expected `cmd={cmd}`, got `cmd={}`",
                self.cmd
            )));
        }
        match self.get("rc") {
            None | Some("0") => Ok(self),
            Some(rc) => Err(DecodeError(format!(
                "`cmd={cmd}` failed with rc={rc} ({})",
                self.get("msg").unwrap_or("no message")
            ))),
        }
    }
}

/// Decodes one line (with or without its `\n`).
///
/// # Errors
/// [`DecodeError`] for a line that is too long, not printable ASCII, without a leading
/// `cmd=NAME`, with a word that is not `key=value`, or with too many words.
pub fn decode(line: &[u8]) -> Result<Reply, DecodeError> {
    if line.len() > MAX_LINE {
        return Err(DecodeError(format!("a line of {} bytes", line.len())));
    }
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    if let Some(b) = line.iter().find(|b| !(b.is_ascii_graphic() || **b == b' ')) {
        return Err(DecodeError(format!("byte {b:#04x} in a reply")));
    }
    // Printable ASCII is UTF-8.
    let text = std::str::from_utf8(line).map_err(|e| DecodeError(e.to_string()))?;
    let mut words = text.split(' ').filter(|w| !w.is_empty());
    let cmd = match words.next().and_then(|w| w.split_once('=')) {
        Some(("cmd", name)) if !name.is_empty() && !name.contains('=') => name.to_string(),
        _ => {
            return Err(DecodeError(format!(
                "{:?} does not start with cmd=",
                clip(text)
            )))
        }
    };
    let mut fields = Vec::new();
    for w in words {
        if fields.len() == MAX_FIELDS {
            return Err(DecodeError(format!("more than {MAX_FIELDS} fields")));
        }
        match w.split_once('=') {
            Some((k, v)) if !k.is_empty() => fields.push((k.to_string(), v.to_string())),
            _ => return Err(DecodeError(format!("{:?} is not key=value", clip(w)))),
        }
    }
    Ok(Reply { cmd, fields })
}

/// The start of a long text, for error messages.
fn clip(s: &str) -> &str {
    let end = s.char_indices().nth(60).map_or(s.len(), |(i, _)| i);
    &s[..end]
}

/// Lowercase hexadecimal of `bytes`: a value the key-value space can hold.
pub fn to_hex(bytes: &[u8]) -> String {
    transport::auth::hex_encode(bytes)
}

/// The bytes of a hexadecimal value.
///
/// # Errors
/// [`DecodeError`] for an odd length or a non-hexadecimal digit.
pub fn from_hex(s: &str) -> Result<Vec<u8>, DecodeError> {
    if !s.len().is_multiple_of(2) {
        return Err(DecodeError(format!(
            "hexadecimal value of odd length {}",
            s.len()
        )));
    }
    transport::auth::hex_decode(s)
        .ok_or_else(|| DecodeError(format!("{:?} is not hexadecimal", clip(s))))
}

/// How many nodes (hosts) a Hydra `PMI_process_mapping` value spans, e.g.
/// `(vector,(0,2,4))`: blocks of `(first node, nodes, ranks per node)`.
///
/// # Errors
/// [`DecodeError`] for anything else.
pub fn mapped_hosts(mapping: &str) -> Result<u64, DecodeError> {
    let bad = || DecodeError(format!("process mapping {:?}", clip(mapping)));
    let inner = mapping
        .strip_prefix("(vector,")
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(bad)?;
    let mut hosts = 0u64;
    for block in inner.split("),") {
        let block = block.trim_start_matches('(').trim_end_matches(')');
        let nums: Vec<u64> = block
            .split(',')
            .map(|n| n.trim().parse::<u64>())
            .collect::<Result<_, _>>()
            .map_err(|_| bad())?;
        let [_, nodes, _] = nums[..] else {
            return Err(bad());
        };
        hosts = hosts.checked_add(nodes).ok_or_else(bad)?;
    }
    Ok(hosts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decodes_what_hydra_sends() {
        let r = decode(b"cmd=maxes kvsname_max=256 keylen_max=64 vallen_max=1024\n").unwrap();
        assert_eq!(r.cmd, "maxes");
        assert_eq!(r.number("vallen_max").unwrap(), 1024);
        let r = decode(b"cmd=get_result rc=-1 msg=key_nope_not_found value=unknown\n").unwrap();
        let e = r.expect("get_result").unwrap_err().to_string();
        assert!(
            e.contains("rc=-1") && e.contains("key_nope_not_found"),
            "{e}"
        );
        assert!(decode(b"cmd=barrier_out\n")
            .unwrap()
            .expect("barrier_out")
            .is_ok());
        // A value may be empty.
        assert_eq!(decode(b"cmd=x value=").unwrap().get("value"), Some(""));
    }

    #[test]
    fn refuses_garbage_with_a_reason() {
        for (line, why) in [
            (&b""[..], "does not start with cmd="),
            (b"hello world\n", "does not start with cmd="),
            (b"cmd= rc=0\n", "does not start with cmd="),
            (b"cmd=x y\n", "is not key=value"),
            (b"cmd=x =y\n", "is not key=value"),
            (b"cmd=x \x00\n", "byte 0x00"),
            (b"cmd=x a=\xff\n", "byte 0xff"),
        ] {
            let e = decode(line).unwrap_err().to_string();
            assert!(e.contains(why), "{line:?}: {e}");
        }
        assert!(decode(&[b'a'; MAX_LINE + 1]).is_err());
        assert!(decode(b"cmd=put_result rc=0")
            .unwrap()
            .expect("get_result")
            .is_err());
    }

    #[test]
    fn encodes_requests_and_refuses_unsafe_words() {
        assert_eq!(
            encode("put", &[("kvsname", "k"), ("key", "a"), ("value", "1")]).unwrap(),
            "cmd=put kvsname=k key=a value=1\n"
        );
        assert!(encode("put", &[("key", "a b")]).is_err());
        assert!(encode("put", &[("key", "a=b")]).is_err());
        assert!(encode("put", &[("", "x")]).is_err());
        assert!(encode("put", &[("value", "x\n")]).is_err());
        assert!(encode("put", &[("value", &"0".repeat(MAX_LINE))]).is_err());
    }

    #[test]
    fn counts_the_hosts_of_a_process_mapping() {
        assert_eq!(mapped_hosts("(vector,(0,1,4))").unwrap(), 1);
        assert_eq!(mapped_hosts("(vector,(0,2,4))").unwrap(), 2);
        assert_eq!(mapped_hosts("(vector,(0,2,4),(2,1,3))").unwrap(), 3);
        assert!(mapped_hosts("").is_err());
        assert!(mapped_hosts("(vector,(0,1))").is_err());
        assert!(mapped_hosts("(vector,(0,x,1))").is_err());
    }

    #[test]
    fn hex_round_trips_and_refuses_bad_digits() {
        assert_eq!(from_hex(&to_hex(b"127.0.0.1:80")).unwrap(), b"127.0.0.1:80");
        assert!(from_hex("abc").is_err());
        assert!(from_hex("zz").is_err());
        assert!(from_hex("é0").is_err());
    }

    proptest! {
        /// The decoder never panics, and whatever it accepts re-encodes to the same reply.
        #[test]
        fn decoder_never_panics_and_round_trips(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(r) = decode(&b) {
                // Values may hold `=` on the way in (we split at the first); we never send one.
                prop_assume!(r.fields.iter().all(|(_, v)| !v.contains('=')));
                let fields: Vec<(&str, &str)> =
                    r.fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let line = encode(&r.cmd, &fields).expect("an accepted reply re-encodes");
                prop_assert_eq!(decode(line.as_bytes()).unwrap(), r);
            }
        }

        /// Near-valid lines (the alphabet of real replies) exercise the deeper paths.
        #[test]
        fn near_valid_lines_never_panic(s in "(cmd=)?[a-z_=0-9 -]{0,80}\n?") {
            if let Ok(r) = decode(s.as_bytes()) {
                prop_assert!(!r.cmd.is_empty());
                let _ = r.expect("get_result");
            }
        }

        #[test]
        fn mapping_parser_never_panics(s in "\\(vector,[(),0-9]{0,40}\\)?") {
            let _ = mapped_hosts(&s);
        }

        #[test]
        fn hex_round_trips(b in proptest::collection::vec(any::<u8>(), 0..100)) {
            prop_assert_eq!(from_hex(&to_hex(&b)).unwrap(), b);
        }
    }
}
