//! What a run reports: named figures (each optionally a ratio to another), error
//! tallies, RSS samples and a per-second timeline; printed for a person, written as
//! JSON, and drawn as an SVG latency plot.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use plotters::prelude::*;
use serde::ser::SerializeMap as _;
use serde::Serialize;
use serde_json::Value;

use crate::rss::RssSample;
use crate::stats::{ms, TimelinePoint};

/// Which value of a timeline point a plotted line shows.
type Statistic = fn(&TimelinePoint) -> f64;

#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub value: f64,
    pub unit: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
}

/// Figures in the order they were added, which is the order a reader wants them in;
/// serialised as a JSON object.
#[derive(Debug, Default)]
pub struct Figures(Vec<(String, Figure)>);

impl Figures {
    pub fn add(&mut self, name: &str, value: f64, unit: &'static str) {
        self.0.push((
            name.to_owned(),
            Figure {
                value,
                unit,
                ratio_to: None,
                ratio: None,
            },
        ));
    }

    /// Adds a figure as a ratio to an earlier one; without that one (or with it zero)
    /// the figure stands alone.
    pub fn add_ratio(&mut self, name: &str, value: f64, unit: &'static str, to: &str) {
        let base = self.get(to).filter(|base| *base != 0.0);
        self.0.push((
            name.to_owned(),
            Figure {
                value,
                unit,
                ratio_to: base.map(|_| to.to_owned()),
                ratio: base.map(|base| value / base),
            },
        ));
    }

    /// p50, p99, p99.9 and max of a histogram of microseconds, as `{prefix}_p50` etc.
    /// in ms; with `ratio_prefix`, each as a ratio to the same percentile under it.
    pub fn add_percentiles(
        &mut self,
        prefix: &str,
        histogram: &hdrhistogram::Histogram<u64>,
        ratio_prefix: Option<&str>,
    ) {
        let points = [
            ("p50", histogram.value_at_quantile(0.5)),
            ("p99", histogram.value_at_quantile(0.99)),
            ("p999", histogram.value_at_quantile(0.999)),
            ("max", histogram.max()),
        ];
        for (suffix, us) in points {
            let name = format!("{prefix}_{suffix}");
            match ratio_prefix {
                Some(base) => self.add_ratio(&name, ms(us), "ms", &format!("{base}_{suffix}")),
                None => self.add(&name, ms(us), "ms"),
            }
        }
    }

    fn get(&self, name: &str) -> Option<f64> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, figure)| figure.value)
    }
}

impl Serialize for Figures {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, figure) in &self.0 {
            map.serialize_entry(name, figure)?;
        }
        map.end()
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    /// One line saying what ran, for the summary and the plot's title.
    pub description: String,
    /// The arguments, secrets redacted.
    pub config: Value,
    pub figures: Figures,
    /// Failed calls and failed sockets, by kind.
    pub errors: BTreeMap<String, u64>,
    pub rss: Vec<RssSample>,
    pub timeline: Vec<TimelinePoint>,
}

impl Report {
    pub fn print(&self) {
        println!();
        println!("{}: {}", self.scenario, self.description);
        let width = self.name_width();
        for (name, figure) in &self.figures.0 {
            let value = format_value(figure.value);
            let ratio = match (&figure.ratio_to, figure.ratio) {
                (Some(to), Some(ratio)) => format!("  ({} × {to})", format_value(ratio)),
                _ => String::new(),
            };
            println!("  {name:<width$} {value:>12} {:<6}{ratio}", figure.unit);
        }
        if self.errors.is_empty() {
            println!("  errors: none");
        } else {
            println!("  errors:");
            for (kind, count) in &self.errors {
                println!("    {count:>8}  {kind}");
            }
        }
    }

    fn name_width(&self) -> usize {
        self.figures
            .0
            .iter()
            .map(|(name, _)| name.len())
            .max()
            .unwrap_or(0)
    }

    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        let json = serde_json::to_string_pretty(self).context("serialise the report")?;
        std::fs::write(path, json + "\n").with_context(|| format!("write {}", path.display()))
    }

    /// p50, p99 and max per second of the measurement.
    pub fn plot(&self, path: &Path) -> anyhow::Result<()> {
        let root = SVGBackend::new(path, (1000, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let seconds = self.timeline.len().max(1) as f64;
        let highest = self
            .timeline
            .iter()
            .map(|point| point.max_ms)
            .fold(1.0, f64::max);
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("{}: {}", self.scenario, self.description),
                ("sans-serif", 16),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..seconds, 0.0..highest * 1.05)?;
        chart
            .configure_mesh()
            .x_desc("seconds into the measurement")
            .y_desc("latency (ms)")
            .draw()?;
        let lines: [(&str, RGBColor, Statistic); 3] = [
            // Drawn first, so the percentiles stay visible where they meet it.
            ("max", RGBColor(150, 150, 150), |point| point.max_ms),
            ("p99", RED, |point| point.p99_ms),
            ("p50", BLUE, |point| point.p50_ms),
        ];
        for (label, color, value) in lines {
            // Plotted at the middle of each second, empty seconds left out.
            let points = self
                .timeline
                .iter()
                .filter(|point| point.per_s > 0)
                .map(|point| (point.second as f64 + 0.5, value(point)));
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))?
                .label(label)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()
            .with_context(|| format!("write {}", path.display()))?;
        Ok(())
    }
}

fn format_value(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else if value.abs() >= 100.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`, for reports.
fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end],
            &rest[..colon],
            &rest[at..]
        ),
        None => url.to_owned(),
    }
}

/// Serialises an optional database URL with its password hidden.
pub fn redacted<S: serde::Serializer>(
    url: &Option<String>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    url.as_deref().map(redact_url).serialize(serializer)
}
