//! Turns the measurements into the markdown table, `results.json`, the
//! latency plot, and (on request) README's benchmark section.

use std::path::Path;
use std::time::Duration;

use plotters::prelude::*;
use serde_json::{json, Value};

use crate::procs::{Mode, HEARTBEAT_INTERVAL};
use crate::{Params, Storm};

/// What one path measured.
#[derive(Debug, Default)]
pub struct ModeResult {
    /// MiB/s of each one-connection repetition.
    pub bulk_one: Vec<f64>,
    /// MiB/s (all connections together) of each many-connection repetition.
    pub bulk_many: Vec<f64>,
    /// Proxy CPU seconds during the bulk runs.
    pub cpu_s: f64,
    /// MiB relayed during the bulk runs.
    pub cpu_mib: f64,
    /// Every timed round trip, in microseconds.
    pub rtt_us: Vec<f64>,
    /// Memory of idle connections (a fresh proxy, see `idle`).
    pub idle: Option<crate::idle::Idle>,
    /// The storm with a high re-login rate.
    pub storm_high: Option<Storm>,
    /// The storm with the default re-login rate.
    pub storm_default: Option<Storm>,
}

fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    Some(s[s.len() / 2])
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    // Nearest rank: the smallest sample with at least q of them at or below.
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

impl ModeResult {
    /// Percentile `p` (0..100) of the round trips, if any were timed.
    pub fn pct(&self, p: f64) -> f64 {
        let mut s = self.rtt_us.clone();
        s.sort_by(f64::total_cmp);
        if s.is_empty() {
            return f64::NAN;
        }
        quantile(&s, p / 100.0)
    }

    fn rtt(&self, p: f64) -> Option<f64> {
        (!self.rtt_us.is_empty()).then(|| self.pct(p))
    }

    fn cpu_ms_per_mib(&self, mode: Mode) -> Option<f64> {
        (mode != Mode::Direct && self.cpu_mib > 0.0).then(|| self.cpu_s * 1000.0 / self.cpu_mib)
    }
}

/// Every path's results.
#[derive(Debug, Default)]
pub struct Results {
    by_mode: [ModeResult; 4],
}

impl Results {
    /// The results of `m`.
    pub fn get(&mut self, m: Mode) -> &mut ModeResult {
        &mut self.by_mode[Mode::ALL.iter().position(|x| *x == m).expect("known mode")]
    }

    /// The idle-memory figures of `m`, if measured.
    pub fn idle(&self, m: Mode) -> Option<&crate::idle::Idle> {
        self.of(m).idle.as_ref()
    }

    fn of(&self, m: Mode) -> &ModeResult {
        &self.by_mode[Mode::ALL.iter().position(|x| *x == m).expect("known mode")]
    }
}

/// The circumstances of a run.
pub struct Run {
    /// RFC 3339, for the JSON.
    date: String,
    /// The same, for people.
    when: String,
    machine: String,
    command: String,
    quick: bool,
    params: Params,
    /// `/proc/loadavg` when the run started.
    pub load_before: String,
    load_after: String,
    seconds: f64,
    notes: Vec<String>,
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map(|kib| kib / (1024.0 * 1024.0))
        .unwrap_or(0.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    format!("{cores} cores ({cpu}), {mem_gib:.0} GiB, Linux {kernel}")
}

fn version(cmd: &str, arg: &str) -> String {
    std::process::Command::new(cmd)
        .arg(arg)
        .output()
        .ok()
        .map(|o| {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            s.lines()
                .find(|l| l.contains("version"))
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

impl Run {
    /// Notes the start of a run.
    pub fn new(params: &Params, quick: bool, notes: Vec<String>) -> Run {
        let now = time::OffsetDateTime::now_utc();
        let date = now
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let when = time::format_description::parse_borrowed::<2>(
            "[year]-[month]-[day] [hour]:[minute] UTC",
        )
        .ok()
        .and_then(|f| now.format(&f).ok())
        .unwrap_or_else(|| date.clone());
        Run {
            date,
            when,
            machine: machine(),
            command: std::iter::once("scripts/bench.sh".to_string())
                .chain(std::env::args().skip(1).filter(|a| a != "--bench"))
                .collect::<Vec<_>>()
                .join(" "),
            quick,
            params: params.clone(),
            load_before: loadavg(),
            load_after: String::new(),
            seconds: 0.0,
            notes,
        }
    }

    /// Notes the end of a run.
    pub fn finish(&mut self, took: Duration) {
        self.load_after = loadavg();
        self.seconds = took.as_secs_f64();
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Better {
    Higher,
    Lower,
}

/// How a row's figure is read from one path's results.
type Getter = Box<dyn Fn(Mode, &ModeResult) -> Option<f64>>;

struct Row {
    label: String,
    key: &'static str,
    better: Better,
    decimals: usize,
    value: Getter,
}

fn rows(p: &Params) -> Vec<Row> {
    let storm_all = |s: &Option<Storm>| s.as_ref().map(|s| s.all_s);
    vec![
        Row {
            label: "bulk game → player, 1 connection (MiB/s)".into(),
            key: "bulk_1conn_mib_s",
            better: Better::Higher,
            decimals: 0,
            value: Box::new(|_, r| median(&r.bulk_one)),
        },
        Row {
            label: format!(
                "bulk game → player, {} connections (MiB/s, total)",
                p.bulk_conns
            ),
            key: "bulk_many_mib_s",
            better: Better::Higher,
            decimals: 0,
            value: Box::new(|_, r| median(&r.bulk_many)),
        },
        Row {
            label: "round trip p50 (µs)".into(),
            key: "rtt_p50_us",
            better: Better::Lower,
            decimals: 1,
            value: Box::new(|_, r| r.rtt(50.0)),
        },
        Row {
            label: "round trip p99 (µs)".into(),
            key: "rtt_p99_us",
            better: Better::Lower,
            decimals: 1,
            value: Box::new(|_, r| r.rtt(99.0)),
        },
        Row {
            label: "round trip p99.9 (µs)".into(),
            key: "rtt_p999_us",
            better: Better::Lower,
            decimals: 1,
            value: Box::new(|_, r| r.rtt(99.9)),
        },
        Row {
            label: format!(
                "memory per idle connection, {} connected and silent (KiB)",
                p.idle_sessions
            ),
            key: "idle_kib_per_session",
            better: Better::Lower,
            decimals: 2,
            value: Box::new(|_, r| r.idle.as_ref().map(|i| i.per_anon())),
        },
        Row {
            label: format!(
                "memory per idle connection, {} logged in (KiB)",
                p.idle_sessions
            ),
            key: "idle_kib_per_logged_in_session",
            better: Better::Lower,
            decimals: 2,
            value: Box::new(|_, r| r.idle.as_ref().map(|i| i.per_logged())),
        },
        Row {
            label: "RSS after they all left ÷ before they came".into(),
            key: "idle_rss_left_ratio",
            better: Better::Lower,
            decimals: 2,
            value: Box::new(|_, r| r.idle.as_ref().map(|i| i.left_ratio())),
        },
        Row {
            label: format!(
                "re-login storm, {} sessions, high rate: all back (s)",
                p.storm_sessions
            ),
            key: "storm_high_all_s",
            better: Better::Lower,
            decimals: 2,
            value: Box::new(move |_, r| storm_all(&r.storm_high)),
        },
        Row {
            label: format!(
                "re-login storm, {} sessions, default rate: all back (s)",
                p.storm_sessions
            ),
            key: "storm_default_all_s",
            better: Better::Lower,
            decimals: 2,
            value: Box::new(move |_, r| storm_all(&r.storm_default)),
        },
        Row {
            label: "CPU per MiB relayed (ms, user + sys)".into(),
            key: "cpu_ms_per_mib",
            better: Better::Lower,
            decimals: 3,
            value: Box::new(|m, r| r.cpu_ms_per_mib(m)),
        },
    ]
}

fn cell(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.decimals$}"),
        Some(_) => "failed".into(),
        None => "—".into(),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if a.is_finite() && b.is_finite() && b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn ratio_cell(r: Option<f64>) -> String {
    r.map(|r| format!("{r:.2}×")).unwrap_or_else(|| "—".into())
}

fn table(run: &Run, res: &Results) -> String {
    let mut s = String::from(
        "| | direct | holdfast | HAProxy | socat | holdfast ÷ direct | holdfast ÷ HAProxy |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for row in rows(&run.params) {
        let v = |m: Mode| (row.value)(m, res.of(m));
        let hf = v(Mode::Holdfast);
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            row.label,
            cell(v(Mode::Direct), row.decimals),
            cell(hf, row.decimals),
            cell(v(Mode::Haproxy), row.decimals),
            cell(v(Mode::Socat), row.decimals),
            ratio_cell(ratio(hf, v(Mode::Direct))),
            ratio_cell(ratio(hf, v(Mode::Haproxy))),
        ));
    }
    s
}

fn conditions(run: &Run) -> String {
    let mut s = format!(
        "Measured {} on {} with `{}` (load average {} before, {} after; {:.0} s). \
         {} {}; holdfast heartbeat interval {HEARTBEAT_INTERVAL}, telnet parsing on.",
        run.when,
        run.machine,
        run.command,
        run.load_before,
        run.load_after,
        run.seconds,
        version("haproxy", "-v"),
        version("socat", "-V").replace("socat version", "socat"),
    );
    for n in &run.notes {
        s.push_str(&format!(" Note: {n}."));
    }
    s
}

fn to_json(run: &Run, res: &Results) -> Value {
    let rows = rows(&run.params);
    let mut results = serde_json::Map::new();
    for m in Mode::ALL {
        let r = res.of(m);
        let mut o = serde_json::Map::new();
        for row in &rows {
            let v = (row.value)(m, r).filter(|x| x.is_finite());
            o.insert(row.key.into(), json!(v));
        }
        o.insert("bulk_1conn_runs_mib_s".into(), json!(r.bulk_one));
        o.insert("bulk_many_runs_mib_s".into(), json!(r.bulk_many));
        o.insert("rtt_samples".into(), json!(r.rtt_us.len()));
        o.insert("rtt_max_us".into(), json!(r.rtt(100.0)));
        o.insert("cpu_seconds".into(), json!(r.cpu_s));
        o.insert("cpu_mib".into(), json!(r.cpu_mib));
        if let Some(i) = &r.idle {
            o.insert("idle".into(), json!(i));
        }
        if let Some(s) = &r.storm_high {
            o.insert("storm_high".into(), json!(s));
        }
        if let Some(s) = &r.storm_default {
            o.insert("storm_default".into(), json!(s));
        }
        results.insert(m.key().into(), Value::Object(o));
    }
    let mut ratios = serde_json::Map::new();
    for (name, other) in [
        ("holdfast/direct", Mode::Direct),
        ("holdfast/haproxy", Mode::Haproxy),
    ] {
        let mut o = serde_json::Map::new();
        for row in &rows {
            let r = ratio(
                (row.value)(Mode::Holdfast, res.of(Mode::Holdfast)),
                (row.value)(other, res.of(other)),
            );
            o.insert(row.key.into(), json!(r));
        }
        ratios.insert(name.into(), Value::Object(o));
    }
    // The latency target is stated as "direct + N µs": give the difference.
    let direct = res.of(Mode::Direct);
    let mut over_direct = serde_json::Map::new();
    for m in [Mode::Holdfast, Mode::Haproxy, Mode::Socat] {
        let r = res.of(m);
        let mut o = serde_json::Map::new();
        for (key, p) in [
            ("rtt_p50_us", 50.0),
            ("rtt_p99_us", 99.0),
            ("rtt_p999_us", 99.9),
        ] {
            let d = match (r.rtt(p), direct.rtt(p)) {
                (Some(a), Some(b)) => Some(a - b),
                _ => None,
            };
            o.insert(key.into(), json!(d));
        }
        over_direct.insert(m.key().into(), Value::Object(o));
    }
    let better: serde_json::Map<String, Value> = rows
        .iter()
        .map(|r| {
            let b = match r.better {
                Better::Higher => "higher",
                Better::Lower => "lower",
            };
            (r.key.to_string(), json!(b))
        })
        .collect();
    json!({
        "date": run.date,
        "machine": run.machine,
        "command": run.command,
        "quick": run.quick,
        "seconds": run.seconds,
        "load_before": run.load_before,
        "load_after": run.load_after,
        "haproxy": version("haproxy", "-v"),
        "socat": version("socat", "-V"),
        "heartbeat_interval": HEARTBEAT_INTERVAL,
        "params": run.params,
        "notes": run.notes,
        "better": better,
        "results": results,
        "ratios": ratios,
        "rtt_minus_direct_us": over_direct,
    })
}

/// Percentiles on the plot's x axis, as "nines": x = -log10(1 - p).
const PLOT_NINES: f64 = 3.0;

fn plot(path: &Path, run: &Run, res: &Results) -> Result<(), Box<dyn std::error::Error>> {
    let series: Vec<(Mode, Vec<f64>)> = Mode::ALL
        .into_iter()
        .filter(|m| !res.of(*m).rtt_us.is_empty())
        .map(|m| {
            let mut s = res.of(m).rtt_us.clone();
            s.sort_by(f64::total_cmp);
            (m, s)
        })
        .collect();
    if series.is_empty() {
        return Ok(());
    }
    let steps = 300;
    let pts = |s: &[f64]| -> Vec<(f64, f64)> {
        (0..=steps)
            .map(|k| {
                let x = PLOT_NINES * k as f64 / steps as f64;
                (x, quantile(s, 1.0 - 10f64.powf(-x)))
            })
            .collect()
    };
    // Log scale: the body (a few µs apart) and the tail (up to ms on a
    // busy machine) both stay readable.
    let ymax = series
        .iter()
        .map(|(_, s)| quantile(s, 0.999))
        .fold(0.0, f64::max)
        * 1.5;
    let ymin = series
        .iter()
        .map(|(_, s)| s[0])
        .fold(f64::INFINITY, f64::min)
        .max(0.1)
        * 0.8;
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Round trip of a one-line command, {} per path ({})",
                run.params.rtt_count,
                run.date.get(..10).unwrap_or("")
            ),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..PLOT_NINES, (ymin..ymax).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("round trip (µs, log scale)")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .x_labels(PLOT_NINES as usize + 1)
        .x_label_formatter(&|x| {
            let p = 100.0 * (1.0 - 10f64.powf(-x));
            let s = format!("{p:.3}");
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        })
        .draw()?;
    let colors = [BLACK, RED, BLUE, RGBColor(0, 140, 0)];
    for (m, s) in &series {
        let c = colors[Mode::ALL.iter().position(|x| x == m).unwrap_or(0)];
        chart
            .draw_series(LineSeries::new(pts(s), c.stroke_width(2)))?
            .label(m.title())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

const README_BEGIN: &str = "<!-- bench:begin -->";
const README_END: &str = "<!-- bench:end -->";
/// Where the README's copy of the plot lives (the README shows it).
const README_PLOT: &str = "docs/bench-latency.svg";
/// Where the README's run's JSON is kept, next to the plot.
const README_JSON: &str = "docs/bench-results.json";

fn update_readme(section: &str, plot: &Path, json: &Path) -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = root.join("README.md");
    let text = std::fs::read_to_string(&readme)?;
    let (Some(a), Some(b)) = (text.find(README_BEGIN), text.find(README_END)) else {
        return Err(std::io::Error::other(format!(
            "README.md has no {README_BEGIN} ... {README_END} section"
        )));
    };
    let new = format!("{}{README_BEGIN}\n{section}{}", &text[..a], &text[b..]);
    std::fs::write(&readme, new)?;
    std::fs::create_dir_all(root.join("docs"))?;
    std::fs::copy(plot, root.join(README_PLOT))?;
    std::fs::copy(json, root.join(README_JSON))?;
    Ok(())
}

/// Prints the table and writes every output file.
pub fn write_all(out: &Path, run: &Run, res: &Results, readme: bool) {
    std::fs::create_dir_all(out).expect("output dir");
    let table = table(run, res);
    let cond = conditions(run);
    let md = format!("{cond}\n\n{table}");
    println!("\n{md}");
    std::fs::write(out.join("results.md"), &md).expect("results.md");
    let j = to_json(run, res);
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&j).expect("json") + "\n",
    )
    .expect("results.json");
    let svg = out.join("latency.svg");
    if let Err(e) = plot(&svg, run, res) {
        eprintln!("bench: could not draw {}: {e}", svg.display());
    }
    println!(
        "wrote {0}/results.json, {0}/results.md, {0}/latency.svg",
        out.display()
    );
    if readme {
        let section = format!(
            "{cond}\n\n{table}\nThe same figures with every run's raw numbers: \
             [`{README_JSON}`]({README_JSON}).\n\n\
             ![Round-trip latency by percentile]({README_PLOT})\n"
        );
        match update_readme(&section, &svg, &out.join("results.json")) {
            Ok(()) => println!("updated README.md, {README_PLOT} and {README_JSON}"),
            Err(e) => eprintln!("bench: README not updated: {e}"),
        }
    }
}
