//! Image references (`registry/repo:tag@digest`), parsed with oci-spec's
//! distribution grammar so kiln and the registries agree on what is valid.

pub use oci_spec::distribution::Reference;

/// Parses an image reference, explaining the expected shape on failure.
pub fn parse(text: &str) -> Result<Reference, String> {
    if text.trim() != text || text.is_empty() {
        return Err(format!(
            "expected an image reference such as \"registry.example/team/image:tag\", found {text:?}"
        ));
    }
    let name = text.split('@').next().unwrap_or(text);
    let repository = match name.rsplit_once('/') {
        Some((_, last)) if last.contains(':') => name.rsplit_once(':').map_or(name, |(r, _)| r),
        Some(_) => name,
        None => name.split(':').next().unwrap_or(name),
    };
    // The registry host may have capitals; the repository path may not.
    let path = repository
        .split_once('/')
        .map_or(repository, |(host, rest)| {
            if host.contains(['.', ':']) || host == "localhost" {
                rest
            } else {
                repository
            }
        });
    if path.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!(
            "invalid image reference {text:?}: the repository must be lower case (expected [registry/]repository[:tag][@sha256:digest])"
        ));
    }
    text.parse::<Reference>().map_err(|e| {
        format!(
            "invalid image reference {text:?}: {e} (expected [registry/]repository[:tag][@sha256:digest], repository in lower case)"
        )
    })
}

/// Checks a repository without tag or digest (for `target_repository`).
pub fn check_repository(text: &str) -> Result<(), String> {
    if text.contains('@') {
        return Err(format!(
            "target repository {text:?} must not carry a digest (expected [registry/]repository)"
        ));
    }
    let reference = parse(text)?;
    if reference
        .tag()
        .is_some_and(|t| text.ends_with(&format!(":{t}")))
    {
        return Err(format!(
            "target repository {text:?} must not carry a tag; use image_tag for that"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    #[rstest]
    #[case("python:3.11")]
    #[case("127.0.0.1:5000/base/python:3.11-bookworm")]
    #[case(
        "ghcr.io/org/img@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    )]
    fn parses(#[case] text: &str) {
        super::parse(text).unwrap();
    }

    #[rstest]
    #[case("")]
    #[case("UPPER/case:tag")]
    #[case("img:bad tag")]
    #[case(" python")]
    #[case("img@sha256:short")]
    fn rejects(#[case] text: &str) {
        assert!(super::parse(text).is_err(), "{text}");
    }

    #[test]
    fn repository_without_tag() {
        super::check_repository("127.0.0.1:5000/kiln/quickstart").unwrap();
        assert!(super::check_repository("127.0.0.1:5000/kiln/quickstart:v1").is_err());
    }
}
