//! Attribute lists (RFC 8216 §4.2): `NAME=value,NAME="quoted, value",...`, with the byte position
//! of every value so a rewrite can replace one and keep every other byte.

use std::ops::Range;

/// One attribute of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute<'a> {
    pub name: &'a str,
    /// The value without its quotes.
    pub value: &'a str,
    pub quoted: bool,
    /// Where the value (without its quotes) sits in the list.
    pub span: Range<usize>,
}

/// Splits an attribute list. Lenient like players are: an entry without `=` or with an
/// unterminated quote ends the list; names are kept as written.
pub fn parse(list: &str) -> Vec<Attribute<'_>> {
    let bytes = list.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        while i < bytes.len() && (bytes[i] == b' ' || bytes[i] == b'\t') {
            i += 1;
        }
        let name_start = i;
        while i < bytes.len() && bytes[i] != b'=' && bytes[i] != b',' {
            i += 1;
        }
        if i >= bytes.len() || bytes[i] != b'=' {
            // `NAME` alone: skip to the next entry.
            i += 1;
            continue;
        }
        let name = list[name_start..i].trim();
        i += 1;
        if i < bytes.len() && bytes[i] == b'"' {
            let start = i + 1;
            let Some(len) = bytes[start..].iter().position(|&b| b == b'"') else {
                break;
            };
            out.push(Attribute {
                name,
                value: &list[start..start + len],
                quoted: true,
                span: start..start + len,
            });
            i = start + len + 1;
            while i < bytes.len() && bytes[i] != b',' {
                i += 1;
            }
        } else {
            let start = i;
            while i < bytes.len() && bytes[i] != b',' {
                i += 1;
            }
            let raw = &list[start..i];
            let value = raw.trim_end();
            out.push(Attribute {
                name,
                value,
                quoted: false,
                span: start..start + value.len(),
            });
        }
        i += 1; // the comma
    }
    out
}

/// The value of attribute `name`, if present.
pub fn get<'a>(list: &[Attribute<'a>], name: &str) -> Option<&'a str> {
    list.iter().find(|a| a.name == name).map(|a| a.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_values_keep_commas_and_spans_point_inside_the_quotes() {
        let text = r#"TYPE=AUDIO,GROUP-ID="aud",NAME="English, main",URI="a/b.m3u8",DEFAULT=YES"#;
        let list = parse(text);
        assert_eq!(get(&list, "NAME"), Some("English, main"));
        assert_eq!(get(&list, "DEFAULT"), Some("YES"));
        let uri = list.iter().find(|a| a.name == "URI").unwrap();
        assert!(uri.quoted);
        assert_eq!(&text[uri.span.clone()], "a/b.m3u8");
        assert_eq!(get(&list, "TYPE"), Some("AUDIO"));
    }

    #[test]
    fn odd_lists_never_panic() {
        for text in [
            "",
            ",",
            "=",
            "A",
            "A=",
            "A=\"",
            "A=\"x",
            "=\"x\"",
            "A=1,,B=2",
            "URI=\"é\",X=ü",
            "A=\"\"",
        ] {
            let _ = parse(text);
        }
        assert_eq!(get(&parse("A=1,,B=2"), "B"), Some("2"));
        assert_eq!(
            get(&parse("A=\"x"), "A"),
            None,
            "unterminated quote ends the list"
        );
    }
}
