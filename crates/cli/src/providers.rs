//! Building the adapters: from a config file, or against the built-in simulators (demo).

use std::sync::Arc;
use std::time::Duration;

use connhealth_channel3::Channel3;
use connhealth_core::http::HttpStats;
use connhealth_core::watch::{WatchConfig, Watcher};
use connhealth_core::{Aggregator, Provider, Secret};
use connhealth_subtotal::Subtotal;
use connhealth_testkit::Fleet;
use connhealth_violet::Violet;

use crate::config::{Config, ProviderConfig};

/// The request timeout of one HTTP call: 30 s, but never longer than the provider's whole fetch.
fn request_timeout(fetch: Duration) -> Duration {
    fetch.min(Duration::from_secs(30))
}

/// Build one adapter from its config entry.
pub fn build(p: &ProviderConfig) -> Result<Arc<dyn Provider>, connhealth_core::Error> {
    build_with_stats(p).map(|(p, _)| p)
}

/// An adapter and its HTTP counters (for `/metrics`).
pub type Built = (Arc<dyn Provider>, Arc<HttpStats>);

/// Build one adapter from its config entry, keeping a handle on its HTTP counters.
pub fn build_with_stats(p: &ProviderConfig) -> Result<Built, connhealth_core::Error> {
    let common = p.common();
    let rt = request_timeout(common.timeout);
    Ok(match p {
        ProviderConfig::Channel3 {
            api_key, customers, ..
        } => {
            let mut b = Channel3::builder()
                .name(common.name.clone())
                .api_key(api_key.clone())
                .concurrency(common.concurrency)
                .request_timeout(rt);
            if let Some(u) = &common.base_url {
                b = b.base_url(u.clone());
            }
            if let Some(c) = customers {
                b = b.customers(c.clone());
            }
            let p = b.build()?;
            let stats = p.client().http().stats().clone();
            (Arc::new(p), stats)
        }
        ProviderConfig::Violet {
            app_id,
            app_secret,
            username,
            password,
            exclude_public,
            ..
        } => {
            let mut b = Violet::builder()
                .name(common.name.clone())
                .app_id(*app_id)
                .app_secret(app_secret.clone())
                .username(username.clone())
                .password(password.clone())
                .concurrency(common.concurrency)
                .request_timeout(rt);
            if let Some(u) = &common.base_url {
                b = b.base_url(u.clone());
            }
            if let Some(x) = exclude_public {
                b = b.exclude_public(*x);
            }
            let p = b.build()?;
            let stats = p.client().http().stats().clone();
            (Arc::new(p), stats)
        }
        ProviderConfig::Subtotal {
            api_key,
            customers,
            link_url,
            ..
        } => {
            let mut b = Subtotal::builder()
                .name(common.name.clone())
                .api_key(api_key.clone())
                .customers(customers.clone())
                .concurrency(common.concurrency)
                .request_timeout(rt);
            if let Some(u) = &common.base_url {
                b = b.base_url(u.clone());
            }
            if let Some(l) = link_url {
                b = b.link_url(l.clone());
            }
            let p = b.build()?;
            let stats = p.client().http().stats().clone();
            (Arc::new(p), stats)
        }
    })
}

/// A built provider and its whole-fetch timeout.
pub type Selected = (Arc<dyn Provider>, Duration);

/// The configured providers (all, or only those named in `only`) with their fetch timeouts.
pub fn selected(config: &Config, only: &[String]) -> Result<Vec<Selected>, String> {
    for name in only {
        if !config.providers.iter().any(|p| &p.common().name == name) {
            let known: Vec<&str> = config
                .providers
                .iter()
                .map(|p| p.common().name.as_str())
                .collect();
            return Err(format!(
                "--provider {name:?}: no such provider in {}; configured: {}",
                config.path.display(),
                known.join(", ")
            ));
        }
    }
    let mut out = Vec::new();
    for p in &config.providers {
        if !only.is_empty() && !only.contains(&p.common().name) {
            continue;
        }
        let provider = build(p).map_err(|e| format!("{}: {e}", config.path.display()))?;
        out.push((provider, p.common().timeout));
    }
    Ok(out)
}

/// An aggregator over the configured providers (all, or only those named in `only`).
pub fn aggregator(config: &Config, only: &[String]) -> Result<Aggregator, String> {
    let mut agg = Aggregator::new();
    for (p, timeout) in selected(config, only)? {
        agg.push(p, Some(timeout));
    }
    Ok(agg)
}

/// A watcher over the configured providers.
pub fn watcher(
    config: &Config,
    only: &[String],
    interval: Duration,
    trip: u32,
    clear: u32,
) -> Result<Watcher, String> {
    let mut w = Watcher::new(WatchConfig {
        interval,
        trip,
        clear,
        ..WatchConfig::default()
    });
    for (p, timeout) in selected(config, only)? {
        w.add(p, Some(timeout));
    }
    Ok(w)
}

/// The three adapters against the built-in simulators, through the real adapters over HTTP.
pub fn demo_providers(fleet: &Fleet) -> Result<Vec<Built>, connhealth_core::Error> {
    let channel3 = Channel3::builder()
        .base_url(fleet.channel3.base_url())
        .api_key(Secret::new(fleet.channel3.api_key()))
        .build()?;
    let violet = Violet::builder()
        .base_url(fleet.violet.base_url())
        .app_id(fleet.violet.app_id())
        .app_secret(Secret::new(fleet.violet.app_secret()))
        .username(fleet.violet.username())
        .password(Secret::new(fleet.violet.password()))
        // The documented example merchant is PUBLIC; the demo shows every documented example.
        .exclude_public(false)
        .build()?;
    let subtotal = Subtotal::builder()
        .base_url(fleet.subtotal.base_url())
        .api_key(Secret::new(fleet.subtotal.api_key()))
        .customers(fleet.subtotal.customer_ids())
        .link_url("https://link.subtotal.com/demo")
        .build()?;
    let c3_stats = channel3.client().http().stats().clone();
    let v_stats = violet.client().http().stats().clone();
    let s_stats = subtotal.client().http().stats().clone();
    Ok(vec![
        (Arc::new(channel3), c3_stats),
        (Arc::new(violet), v_stats),
        (Arc::new(subtotal), s_stats),
    ])
}

/// An aggregator over the three built-in simulators.
pub fn demo_aggregator(fleet: &Fleet) -> Result<Aggregator, connhealth_core::Error> {
    let mut agg = Aggregator::new().with_timeout(Duration::from_secs(60));
    for (p, _) in demo_providers(fleet)? {
        agg.push(p, None);
    }
    Ok(agg)
}
