//! The providers a command asks: the configured ones (all, or those named by `--provider`),
//! or the three adapters against the built-in simulators (demo).

use std::sync::Arc;
use std::time::Duration;

use connhealth::simulators::{self, Fleet};
use connhealth::watch::{WatchConfig, Watcher};
use connhealth::{Aggregator, Provider};

use crate::config::{Config, ProviderEntry};
use crate::error::CliError;

/// The configured providers, all or only those named in `only` (an unknown name is a usage
/// error that lists the configured ones).
pub fn selected<'a>(
    config: &'a Config,
    only: &[String],
) -> Result<Vec<&'a ProviderEntry>, CliError> {
    for name in only {
        if !config.providers.iter().any(|p| &p.name == name) {
            let known: Vec<&str> = config.providers.iter().map(|p| p.name.as_str()).collect();
            return Err(CliError::Usage(format!(
                "--provider {name:?}: no such provider in {}; configured: {}",
                config.path.display(),
                known.join(", ")
            )));
        }
    }
    Ok(config
        .providers
        .iter()
        .filter(|p| only.is_empty() || only.contains(&p.name))
        .collect())
}

/// An aggregator over the configured providers (all, or only those named in `only`).
pub fn aggregator(config: &Config, only: &[String]) -> Result<Aggregator, CliError> {
    let mut agg = Aggregator::new();
    for p in selected(config, only)? {
        agg.push(p.provider.clone(), Some(p.timeout));
    }
    Ok(agg)
}

/// A watcher over the configured providers (all, or only those named in `only`).
pub fn watcher(
    config: &Config,
    only: &[String],
    settings: WatchConfig,
) -> Result<Watcher, CliError> {
    let mut w = Watcher::new(settings);
    for p in selected(config, only)? {
        w.add(p.provider.clone(), Some(p.timeout));
    }
    Ok(w)
}

/// The three adapters against the built-in simulators, through the real adapters over HTTP.
pub fn demo_providers(fleet: &Fleet) -> Result<Vec<Arc<dyn Provider>>, CliError> {
    simulators::providers(fleet).map_err(|e| CliError::Internal(e.to_string()))
}

/// Where the demo's Channel3 connect sessions send the merchant back to (a platform's own
/// callback in real use); set, so the demo's Channel3 connections offer `connect_link`.
const DEMO_CONNECT_REDIRECT: &str = "https://app.example.com/channel3/callback";

/// The demo's providers for `demo --serve`: as [`demo_providers`], with Violet and Subtotal
/// verifying webhooks with these secrets (the simulators sign theirs with the same), and
/// Channel3 offering connect links.
pub fn demo_providers_with_webhooks(
    fleet: &Fleet,
    violet_secret: &str,
    subtotal_secret: &str,
) -> Result<Vec<Arc<dyn Provider>>, CliError> {
    let e = |e: connhealth::Error| CliError::Internal(e.to_string());
    Ok(vec![
        Arc::new(
            simulators::channel3(&fleet.channel3)
                .connect_redirect_uri(DEMO_CONNECT_REDIRECT)
                .build()
                .map_err(e)?,
        ),
        Arc::new(
            simulators::violet(&fleet.violet)
                .exclude_public(false)
                .webhook_secret(connhealth::Secret::new(violet_secret))
                .build()
                .map_err(e)?,
        ),
        Arc::new(
            simulators::subtotal(&fleet.subtotal)
                .link_url(simulators::SUBTOTAL_LINK_URL)
                .webhook_secret(connhealth::Secret::new(subtotal_secret))
                .build()
                .map_err(e)?,
        ),
    ])
}

/// An aggregator over the three built-in simulators.
pub fn demo_aggregator(fleet: &Fleet) -> Result<Aggregator, CliError> {
    let mut agg = Aggregator::new().with_timeout(Duration::from_secs(60));
    for p in demo_providers(fleet)? {
        agg.push(p, None);
    }
    Ok(agg)
}
