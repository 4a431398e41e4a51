//! Image references (`registry/repo:tag@digest`), parsed by the grammar of
//! the distribution spec (`distribution/reference`), with Docker's
//! normalisation of short names (`python` is `docker.io/library/python`).
//!
//! Written by hand rather than through oci-spec's `Reference`: that parser
//! compiles a Unicode regex on first use, about 35 ms of every `kiln build`,
//! which is most of a no-op build's time. The grammar is small and fully
//! covered by the tests below.

use std::fmt;
use std::str::FromStr;

/// The registry a name without a host part lives on.
pub const DEFAULT_REGISTRY: &str = "docker.io";

/// A parsed image reference; `registry` and `repository` are normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl Reference {
    /// The registry host (with port), `docker.io` when none was written.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path within the registry (`library/` added on Docker Hub).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag as written; `None` when the reference has none.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest (`algorithm:hex`) as written; `None` when there is none.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(text: &str) -> Result<Self, ReferenceError> {
        parse(text)
    }
}

/// Why text is not an image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// The text is empty or has white space around it.
    #[error(
        "expected an image reference such as \"registry.example/team/image:tag\", found {text:?}"
    )]
    NotAReference {
        /// The text as given.
        text: String,
    },
    /// One part of the reference breaks the grammar.
    #[error(
        "invalid image reference {text:?}: {why} (expected [registry/]repository[:tag][@sha256:digest])"
    )]
    Invalid {
        /// The text as given.
        text: String,
        /// Which part is wrong, and how.
        why: ReferencePartError,
    },
}

/// What is wrong with one part of an image reference (the registry, a
/// repository component, the tag or the digest).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferencePartError {
    /// The name (registry and repository) is over 255 characters.
    #[error("the name is longer than 255 characters")]
    NameTooLong,
    /// The repository has an upper-case letter.
    #[error("the repository must be lower case")]
    UpperCase,
    /// Two slashes in a row, or a slash at an end of the repository.
    #[error("a repository path component is empty")]
    EmptyComponent,
    /// A repository component starts or ends with a separator.
    #[error(
        "repository component {component:?} must start and end with a lower-case letter or digit"
    )]
    ComponentEnds {
        /// The component.
        component: String,
    },
    /// A repository component has a separator the grammar does not allow.
    #[error(
        "repository component {component:?} has the separator {separator:?}; allowed are '.', '_', '__' and runs of '-'"
    )]
    Separator {
        /// The component.
        component: String,
        /// The run of separator characters.
        separator: String,
    },
    /// A bracketed IPv6 registry has no `]`.
    #[error("registry {registry:?} has an unclosed '['")]
    UnclosedBracket {
        /// The registry part.
        registry: String,
    },
    /// The text between `[` and `]` is not an IPv6 address.
    #[error("registry {registry:?} is not a valid IPv6 address")]
    Ipv6 {
        /// The registry part.
        registry: String,
    },
    /// Something other than `:port` follows a bracketed IPv6 address.
    #[error("registry {registry:?}: expected ':port' after ']'")]
    AfterBracket {
        /// The registry part.
        registry: String,
    },
    /// The registry's port is empty or not all digits.
    #[error("registry {registry:?} has a port that is not a number")]
    Port {
        /// The registry part.
        registry: String,
    },
    /// A label of the registry's host name is empty or has a bad character.
    #[error("registry host {host:?} is not a valid host name")]
    Host {
        /// The host, without the port.
        host: String,
    },
    /// The tag is empty, too long or has a character a tag may not have.
    #[error(
        "tag {tag:?} must be 1-128 of letters, digits, '_', '.', '-', not starting with '.' or '-'"
    )]
    Tag {
        /// The tag.
        tag: String,
    },
    /// The digest has no `algorithm:` part.
    #[error("digest {digest:?} has no ':' (expected sha256:<64 hex>)")]
    DigestColon {
        /// The digest.
        digest: String,
    },
    /// The digest's algorithm is not lower-case components.
    #[error("digest algorithm {algorithm:?} is not valid")]
    DigestAlgorithm {
        /// The algorithm part.
        algorithm: String,
    },
    /// The digest's encoded part has the wrong length or a non-hex digit.
    #[error("digest {digest:?} must be {algorithm}: followed by {} hex digits", hex_digits(*.want))]
    DigestHex {
        /// The digest.
        digest: String,
        /// The algorithm part.
        algorithm: String,
        /// How many hex digits the algorithm has; `None`: at least 32.
        want: Option<usize>,
    },
}

fn hex_digits(want: Option<usize>) -> String {
    want.map_or("at least 32".to_string(), |n| n.to_string())
}

/// Why text is not a repository fit for `target_repository`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RepositoryError {
    /// The repository carries `@digest`.
    #[error("target repository {text:?} must not carry a digest (expected [registry/]repository)")]
    Digest {
        /// The text as given.
        text: String,
    },
    /// The repository carries `:tag`.
    #[error("target repository {text:?} must not carry a tag; use image_tag for that")]
    Tag {
        /// The text as given.
        text: String,
    },
    /// The text is not an image reference at all.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
}

/// Parses an image reference, explaining the expected shape on failure.
pub fn parse(text: &str) -> Result<Reference, ReferenceError> {
    if text.trim() != text || text.is_empty() {
        return Err(ReferenceError::NotAReference { text: text.into() });
    }
    let bad = |why: ReferencePartError| ReferenceError::Invalid {
        text: text.into(),
        why,
    };
    let (name_tag, digest) = match text.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (text, None),
    };
    if let Some(d) = digest {
        check_digest(d).map_err(bad)?;
    }
    // A tag follows the last ':' that comes after the last '/'.
    let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_tag[last_slash..].rfind(':') {
        Some(i) => (
            &name_tag[..last_slash + i],
            Some(&name_tag[last_slash + i + 1..]),
        ),
        None => (name_tag, None),
    };
    if let Some(t) = tag {
        check_tag(t).map_err(bad)?;
    }
    if name.len() > 255 {
        return Err(bad(ReferencePartError::NameTooLong));
    }
    let (registry, path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':']) || first.starts_with('[') || first == "localhost" =>
        {
            check_domain(first).map_err(bad)?;
            (first, rest)
        }
        _ => (DEFAULT_REGISTRY, name),
    };
    if path.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(bad(ReferencePartError::UpperCase));
    }
    for component in path.split('/') {
        check_path_component(component).map_err(bad)?;
    }
    let repository = if registry == DEFAULT_REGISTRY && !path.contains('/') {
        format!("library/{path}")
    } else {
        path.to_string()
    };
    Ok(Reference {
        registry: registry.to_string(),
        repository,
        tag: tag.map(String::from),
        digest: digest.map(String::from),
    })
}

/// `[a-z0-9]+` joined by `.`, `_`, `__` or any run of `-`.
fn check_path_component(c: &str) -> Result<(), ReferencePartError> {
    if c.is_empty() {
        return Err(ReferencePartError::EmptyComponent);
    }
    let bytes = c.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return Err(ReferencePartError::ComponentEnds {
            component: c.into(),
        });
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return Err(ReferencePartError::Separator {
                component: c.into(),
                separator: sep.into(),
            });
        }
    }
    Ok(())
}

/// `host[:port]`, host a DNS name, an IPv4 address or a bracketed IPv6 one.
fn check_domain(d: &str) -> Result<(), ReferencePartError> {
    let registry = || d.to_string();
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return Err(ReferencePartError::UnclosedBracket {
                registry: registry(),
            });
        };
        if v6.is_empty() || !v6.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
            return Err(ReferencePartError::Ipv6 {
                registry: registry(),
            });
        }
        match after {
            "" => (None, None),
            p => match p.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => {
                    return Err(ReferencePartError::AfterBracket {
                        registry: registry(),
                    });
                }
            },
        }
    } else {
        match d.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(d), None),
        }
    };
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(ReferencePartError::Port {
            registry: registry(),
        });
    }
    if let Some(host) = host {
        for label in host.split('.') {
            let bytes = label.as_bytes();
            let ok = !bytes.is_empty()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
                && bytes[0] != b'-'
                && bytes[bytes.len() - 1] != b'-';
            if !ok {
                return Err(ReferencePartError::Host { host: host.into() });
            }
        }
    }
    Ok(())
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn check_tag(t: &str) -> Result<(), ReferencePartError> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = t.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= 128
        && word(bytes[0])
        && bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ReferencePartError::Tag { tag: t.into() })
    }
}

/// `algorithm:hex`, the encoded part at least 32 hex digits.
fn check_digest(d: &str) -> Result<(), ReferencePartError> {
    let Some((algorithm, hex)) = d.split_once(':') else {
        return Err(ReferencePartError::DigestColon { digest: d.into() });
    };
    let alg_ok = !algorithm.is_empty()
        && algorithm.split(['+', '.', '_', '-']).all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
    if !alg_ok {
        return Err(ReferencePartError::DigestAlgorithm {
            algorithm: algorithm.into(),
        });
    }
    let want = match algorithm {
        "sha256" => Some(64),
        "sha512" => Some(128),
        _ => None,
    };
    let hex_ok = hex.len() >= 32
        && want.is_none_or(|n| hex.len() == n)
        && hex.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex_ok {
        return Err(ReferencePartError::DigestHex {
            digest: d.into(),
            algorithm: algorithm.into(),
            want,
        });
    }
    Ok(())
}

/// Checks a repository without tag or digest (for `target_repository`).
pub fn check_repository(text: &str) -> Result<(), RepositoryError> {
    if text.contains('@') {
        return Err(RepositoryError::Digest { text: text.into() });
    }
    let reference = parse(text)?;
    if reference.tag().is_some() {
        return Err(RepositoryError::Tag { text: text.into() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[rstest]
    #[case("python:3.11", "docker.io", "library/python", Some("3.11"), false)]
    #[case("python", "docker.io", "library/python", None, false)]
    #[case("team/img:v1", "docker.io", "team/img", Some("v1"), false)]
    #[case(
        "127.0.0.1:5000/base/python:3.11-bookworm",
        "127.0.0.1:5000",
        "base/python",
        Some("3.11-bookworm"),
        false
    )]
    #[case("localhost/a/b", "localhost", "a/b", None, false)]
    #[case("localhost:5000/a", "localhost:5000", "a", None, false)]
    #[case("[::1]:5000/a:t", "[::1]:5000", "a", Some("t"), false)]
    #[case(
        "Registry.Example/a_b/c__d/e-f--g.h:T_1",
        "Registry.Example",
        "a_b/c__d/e-f--g.h",
        Some("T_1"),
        false
    )]
    #[case("ghcr.io/org/img@DIGEST", "ghcr.io", "org/img", None, true)]
    #[case("ghcr.io/org/img:v2@DIGEST", "ghcr.io", "org/img", Some("v2"), true)]
    fn parses(
        #[case] text: &str,
        #[case] registry: &str,
        #[case] repository: &str,
        #[case] tag: Option<&str>,
        #[case] has_digest: bool,
    ) {
        let text = text.replace("DIGEST", D);
        let r = super::parse(&text).unwrap();
        assert_eq!(r.registry(), registry);
        assert_eq!(r.repository(), repository);
        assert_eq!(r.tag(), tag);
        assert_eq!(r.digest(), has_digest.then_some(D));
        // Display is the normalised, fully qualified form, and parses back.
        assert_eq!(super::parse(&r.to_string()).unwrap(), r);
    }

    #[rstest]
    #[case("", "such as")]
    #[case("UPPER/case:tag", "lower case")]
    #[case("Python:3.11", "lower case")]
    #[case("img:bad tag", "tag")]
    #[case(" python", "such as")]
    #[case("img@sha256:short", "hex digits")]
    #[case("img@sha256", "no ':'")]
    #[case("img:", "tag")]
    #[case("img:.x", "tag")]
    #[case("a//b", "empty")]
    #[case("a/-b", "start and end")]
    #[case("a/b_", "start and end")]
    #[case("a/b___c", "separator")]
    #[case("host.io:port/a", "port")]
    #[case("bad_host.io/a", "host name")]
    #[case("[zz]/a", "IPv6")]
    fn rejects(#[case] text: &str, #[case] why: &str) {
        let err = super::parse(text).unwrap_err().to_string();
        assert!(err.contains(why), "{text}: {err}");
    }

    #[test]
    fn name_length_is_bounded() {
        let long = format!("r.io/{}", "a".repeat(260));
        assert!(super::parse(&long).unwrap_err().to_string().contains("255"));
    }

    #[test]
    fn repository_without_tag() {
        super::check_repository("127.0.0.1:5000/kiln/quickstart").unwrap();
        assert!(super::check_repository("127.0.0.1:5000/kiln/quickstart:v1").is_err());
        assert!(super::check_repository(&format!("r.io/a@{D}")).is_err());
    }
}
