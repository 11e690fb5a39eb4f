//! Fetched peer bundles on disk, under `state_dir/bundles/<trust-domain>.json`, so that a
//! restarted gateway trusts its peers even while their bundle endpoints are down.

use std::path::{Path, PathBuf};

use meshfed_trust::{Bundle, TrustDomain};

/// Where a trust domain's fetched bundle is kept.
pub(crate) fn path(state_dir: &Path, trust_domain: &TrustDomain) -> PathBuf {
    state_dir
        .join("bundles")
        .join(format!("{}.json", trust_domain.as_str()))
}

/// The kept bundle of `trust_domain`, if there is a readable one. One that cannot be read is
/// reported and ignored: the configured bundle serves instead.
pub(crate) fn load(state_dir: &Path, trust_domain: &TrustDomain) -> Option<Bundle> {
    let path = path(state_dir, trust_domain);
    let bytes = std::fs::read(&path).ok()?;
    match Bundle::from_jwks(trust_domain.clone(), &bytes) {
        Ok(bundle) => Some(bundle),
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "ignoring a kept bundle that cannot be read");
            None
        }
    }
}

/// Keeps `bundle`, replacing the previous one atomically (write, then rename).
pub(crate) fn save(state_dir: &Path, bundle: &Bundle) -> std::io::Result<()> {
    let path = path(state_dir, bundle.trust_domain());
    let dir = path.parent().unwrap_or(state_dir);
    std::fs::create_dir_all(dir)?;
    let temporary = path.with_extension("json.new");
    std::fs::write(&temporary, bundle.to_jwks())?;
    std::fs::rename(&temporary, &path)
}
