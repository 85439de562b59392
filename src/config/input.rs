//! Bounded configuration input: only regular files, at most [`MAX_BYTES`], and a cheap nesting
//! pre-check before YAML parsing, so no file (`/dev/zero`, a FIFO, 200 KB of `[`) can make
//! loading slow, huge or hang.

use std::io::Read;
use std::path::Path;

use super::{ConfigError, Problem};

/// Largest configuration (or environment) file read: far above any real one.
pub const MAX_BYTES: u64 = 1024 * 1024;

/// Deepest nesting of mappings and sequences (block and flow together) accepted.
pub const MAX_DEPTH: usize = 64;

/// Reads `path` if it is a regular file of at most [`MAX_BYTES`] of UTF-8 text. FIFOs, devices,
/// sockets and directories are refused at once (the open never waits for a writer).
pub fn read_regular_file(path: &Path) -> Result<String, ConfigError> {
    read_bounded(path).map(|(text, _)| text)
}

/// As [`read_regular_file`], with the file's metadata (taken from the open file).
pub fn read_bounded(path: &Path) -> Result<(String, std::fs::Metadata), ConfigError> {
    let shown = || path.display().to_string();
    let refuse = |reason: String| ConfigError::Refused {
        path: shown(),
        reason,
    };
    let file = open_nonblocking(path).map_err(|source| ConfigError::Read {
        path: shown(),
        source,
    })?;
    let meta = file.metadata().map_err(|source| ConfigError::Read {
        path: shown(),
        source,
    })?;
    if !meta.is_file() {
        return Err(refuse(format!(
            "not a regular file ({}); give the path of a file",
            kind(&meta)
        )));
    }
    if meta.len() > MAX_BYTES {
        return Err(refuse(format!(
            "{} bytes: larger than the 1 MiB limit of configuration and environment files",
            meta.len()
        )));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // A file growing while it is read is still cut at the limit.
    file.take(MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| ConfigError::Read {
            path: shown(),
            source,
        })?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(refuse(
            "larger than the 1 MiB limit of configuration and environment files".into(),
        ));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        refuse(format!(
            "not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        ))
    })?;
    Ok((text, meta))
}

/// Opens for reading with `O_NONBLOCK`: a FIFO opens at once instead of waiting for a writer
/// (regular files ignore the flag).
fn open_nonblocking(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
}

fn kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else if t.is_socket() {
        "a socket"
    } else if meta.is_dir() {
        "a directory"
    } else {
        "not a file"
    }
}

/// Refuses YAML nested deeper than `max` (block indentation levels, `- ` items on one line and
/// flow `[`/`{` together) in one linear pass, before the parser sees it. Quoted scalars,
/// comments and block scalars (`|`, `>`) do not count.
pub fn check_nesting(text: &str, max: usize) -> Result<(), Problem> {
    let too_deep = |line: usize| Problem {
        path: String::new(),
        message: format!("nested more than {max} levels deep; a configuration never needs that"),
        location: Some((line, 1)),
    };
    // Indentation of the open block collections.
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    let mut quote: Option<char> = None;
    // Indentation of the key whose block scalar (`|`, `>`) is being skipped.
    let mut block_scalar: Option<usize> = None;
    for (n, line) in text.lines().enumerate() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        let body = &line[indent..];
        if let Some(owner) = block_scalar {
            if body.trim().is_empty() || indent > owner {
                continue;
            }
            block_scalar = None;
        }
        let blank = body.trim().is_empty() || body.starts_with('#');
        let mut rest = body;
        if quote.is_none() && flow == 0 && !blank {
            if body.starts_with("---") || body.starts_with("...") {
                indents.clear();
            } else {
                while indents.last().is_some_and(|&i| i >= indent) {
                    indents.pop();
                }
                indents.push(indent);
                // `- - - x` opens one sequence per dash.
                let mut col = indent;
                while let Some(after) = rest.strip_prefix('-').filter(|a| a.starts_with(' ')) {
                    let spaces = after.len() - after.trim_start_matches(' ').len();
                    col += 1 + spaces;
                    rest = &after[spaces..];
                    if rest.is_empty() || rest.starts_with('#') {
                        break;
                    }
                    indents.push(col);
                }
                if indents.len() > max {
                    return Err(too_deep(n + 1));
                }
            }
        }
        let owner_indent = indents.last().copied().unwrap_or(0);
        let mut prev = ' ';
        let mut chars = rest.chars().peekable();
        while let Some(c) = chars.next() {
            match quote {
                Some('"') if c == '\\' => {
                    chars.next();
                }
                Some(q) if c == q => {
                    // `''` inside single quotes is an escaped quote.
                    if q == '\'' && chars.peek() == Some(&'\'') {
                        chars.next();
                    } else {
                        quote = None;
                    }
                }
                Some(_) => {}
                None => match c {
                    '#' if prev == ' ' || prev == '\t' => break,
                    '"' | '\'' if matches!(prev, ' ' | '\t' | '[' | '{' | ',' | ':') => {
                        quote = Some(c);
                    }
                    '[' | '{' => {
                        flow += 1;
                        if flow + indents.len() > max {
                            return Err(too_deep(n + 1));
                        }
                    }
                    ']' | '}' => flow = flow.saturating_sub(1),
                    _ => {}
                },
            }
            prev = c;
        }
        if quote.is_none() && flow == 0 && is_block_scalar_start(rest) {
            block_scalar = Some(owner_indent);
        }
    }
    Ok(())
}

/// Whether a line ends with a block scalar indicator: `key: |`, `- >-`, `key: |2+ # note`.
fn is_block_scalar_start(line: &str) -> bool {
    let code = match line.find(" #") {
        Some(i) => &line[..i],
        None => line,
    };
    let last = code.trim_end().rsplit([' ', '\t']).next().unwrap_or("");
    let mut chars = last.chars();
    matches!(chars.next(), Some('|' | '>'))
        && chars.all(|c| c == '+' || c == '-' || c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_ok(text: &str, max: usize) -> bool {
        check_nesting(text, max).is_ok()
    }

    #[test]
    fn counts_flow_and_block_nesting() {
        assert!(depth_ok("a:\n  b:\n    c: 1\n", 3));
        assert!(!depth_ok("a:\n  b:\n    c:\n      d: 1\n", 3));
        assert!(depth_ok("a: [1, [2]]\n", 3));
        assert!(!depth_ok("a: [[[1]]]\n", 3));
        assert!(!depth_ok("- - - - x\n", 3));
        assert!(depth_ok("- - x\n", 3));
        // Back out of nesting: siblings do not add up.
        assert!(depth_ok("a:\n  b: 1\nc:\n  d: 1\ne:\n  f: 1\n", 2));
        // A flow collection over several lines.
        assert!(!depth_ok("a: [\n  [\n    [\n      1]]]\n", 3));
    }

    #[test]
    fn quotes_comments_and_block_scalars_do_not_count() {
        assert!(depth_ok("a: '[[[[[['\nb: \"{{{{\\\"[[[\"\n", 2));
        assert!(depth_ok("a: 1 # [[[[[[[[\n", 2));
        assert!(depth_ok(
            "a: |\n  [[[[[[[\n      x:\n         y:\nb: 1\n",
            2
        ));
        assert!(depth_ok("a: 'it''s [[[['\n", 2));
        // The shipped example's regexes and flow mappings pass a tight limit.
        let example = include_str!("../../config.yaml");
        assert!(depth_ok(example, 10), "{:?}", check_nesting(example, 10));
    }

    #[test]
    fn a_hostile_file_is_refused_with_its_line() {
        let text = "a:\n".to_string() + &"[".repeat(200_000);
        let start = std::time::Instant::now();
        let e = check_nesting(&text, MAX_DEPTH).unwrap_err();
        assert!(start.elapsed().as_millis() < 500);
        assert_eq!(e.location, Some((2, 1)));
        assert!(e.message.contains("64"), "{}", e.message);
    }
}
