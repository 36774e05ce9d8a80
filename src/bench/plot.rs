//! `bench model --plot FILE.svg`: tok/s by batch size, prefill and decode side by side, one line per
//! (prompt, gen) with its roofline in the same colour, lighter, and a peer's figures (transformers) as
//! crosses in that colour; and a roofline chart (achieved FLOP/s against FLOPs per weight byte, under each
//! device's roof). `bench ops --plot FILE.svg`: the same roofline chart with one point per op row (FLOPs
//! per byte the op moves), one series per op and device, under each device's bandwidth and f32 / bf16 /
//! fp8 ceilings, and one series per peer (a marker and colour of its own) at the intensity of the row it
//! was timed beside: the same work, so a peer's point above ours is faster. Readable without the JSON:
//! the title names the model, the machine and the commit. SVG only (plotters' SVG backend, no font
//! stack: the viewer renders the text).

use plotters::prelude::*;

use super::results::{Row, Run};

const SIZE: (u32, u32) = (1500, 520);
const OPS_SIZE: (u32, u32) = (1400, 700);
/// Width of the `bench ops` roofline's legend panel, right of the plot: a legend inside the plot covered
/// points (peers' rows sit where ours do), so it has a panel of its own.
const OPS_LEGEND_WIDTH: u32 = 300;
/// Height of one legend line.
const LEGEND_LINE: i32 = 18;

/// The chart as SVG text.
pub fn tok_s_by_batch(run: &Run) -> Result<String, String> {
    let mut svg = String::new();
    draw(run, &mut svg).map_err(|e| format!("--plot: drawing the chart: {e}"))?;
    Ok(svg)
}

/// The `bench ops` roofline as SVG text; an error when no row has a roofline to place it (runs saved before
/// rows carried their FLOPs and bytes).
pub fn ops_roofline(run: &Run) -> Result<String, String> {
    if run.rows.iter().all(|r| r.roofline.is_none()) {
        return Err("no row of the run has a roofline (its FLOPs and bytes): nothing to draw".into());
    }
    let mut svg = String::new();
    draw_ops(run, &mut svg).map_err(|e| format!("--plot: drawing the chart: {e}"))?;
    Ok(svg)
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;
type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

/// How a point is drawn: ours as a filled circle (decode) or triangle (prefill), peers as outlined marks,
/// a cross or a ring, one per peer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Marker {
    Circle,
    Triangle,
    Cross,
    Ring,
}

/// The markers of the peers, in the order they first appear in a run.
const PEER_MARKERS: [Marker; 2] = [Marker::Cross, Marker::Ring];
/// The roofline's colours for the peers, in the same order: dark, apart from the palette of our series,
/// so that thin outlined marks stay visible on white.
const PEER_COLORS: [RGBColor; 2] = [BLACK, RGBColor(170, 0, 0)];

impl Marker {
    fn of_phase(phase: &str) -> Marker {
        if phase == "prefill" {
            Marker::Triangle
        } else {
            Marker::Circle
        }
    }
}

/// `marker` centred on `at` in `color`, the same size in the chart and in its legend.
fn mark<DB: DrawingBackend, C: Clone + 'static>(
    marker: Marker,
    at: C,
    color: RGBAColor,
) -> DynElement<'static, DB, C> {
    match marker {
        Marker::Circle => Circle::new(at, 4, color.filled()).into_dyn(),
        Marker::Triangle => TriangleMarker::new(at, 5, color.filled()).into_dyn(),
        Marker::Cross => Cross::new(at, 5, color.stroke_width(2)).into_dyn(),
        Marker::Ring => Circle::new(at, 5, color.stroke_width(2)).into_dyn(),
    }
}

/// A point of a roofline chart: its series, its marker, the intensity (FLOPs per byte) and GFLOP/s
/// achieved.
struct Point {
    series: String,
    marker: Marker,
    intensity: f64,
    gflops: f64,
}

/// A roof: its label, the compute ceiling in GFLOP/s and the bandwidth in GB/s.
struct Roof {
    label: String,
    gflops: f64,
    gbps: f64,
}

fn draw_ops(run: &Run, svg: &mut String) -> DrawResult {
    let root = SVGBackend::with_string(svg, OPS_SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let title = format!(
        "bench ops: {} ({}), {} ({} cores), commit {}",
        run.model.source, run.model.dtype_path, run.machine.cpu, run.machine.cores, run.commit
    );
    let root = root.titled(&title, ("sans-serif", 16))?;
    // A row's work, from its own roofline (ours) or that of the row it was timed beside (a peer's).
    let work = |r: &Row| {
        let ours = match r.peer_of() {
            Some((_, key)) => run.ours(key)?,
            None => r,
        };
        let l = ours.roofline.as_ref().filter(|l| l.bytes > 0.0 && l.flops > 0.0 && l.tokens > 0)?;
        Some((l.flops / l.bytes, r.mean / l.tokens as f64 * l.flops / 1e9))
    };
    // Ours first, then the peers' series, so that the legend lists them last.
    let (mut peers, mut points, mut theirs): (Vec<&str>, Vec<Point>, Vec<Point>) = Default::default();
    for r in &run.rows {
        let Some((intensity, gflops)) = work(r) else { continue };
        match r.peer_of() {
            Some((peer, _)) => {
                let i = peers.iter().position(|p| *p == peer).unwrap_or_else(|| {
                    peers.push(peer);
                    peers.len() - 1
                });
                let marker = PEER_MARKERS[i % PEER_MARKERS.len()];
                theirs.push(Point { series: format!("peer {peer}"), marker, intensity, gflops });
            }
            None => {
                let (Some(op), Some(device)) = (&r.op, &r.device) else { continue };
                let (series, marker) = (format!("{op} on {device}"), Marker::of_phase(&r.phase));
                points.push(Point { series, marker, intensity, gflops });
            }
        }
    }
    points.append(&mut theirs);
    let mut roofs = Vec::new();
    for d in &run.devices {
        let Some(p) = d.peak.as_ref().filter(|p| p.bytes_per_s > 0.0) else { continue };
        // One line per distinct ceiling: on a CPU f32 and bf16 are often the same rate.
        let mut ceilings: Vec<(String, f64)> = Vec::new();
        for (name, flops) in [("f32", p.f32_flops), ("bf16", p.bf16_flops), ("fp8", p.fp8_flops)] {
            match ceilings.iter_mut().find(|(_, f)| *f == flops) {
                Some((label, _)) => *label += &format!(" = {name}"),
                None if flops > 0.0 => ceilings.push((name.to_string(), flops)),
                None => {}
            }
        }
        for (label, flops) in ceilings {
            roofs.push(Roof {
                // `measured …` or `datasheet …`: the first word says which.
                label: format!(
                    "{} {label} roof ({})",
                    d.id,
                    p.source.split_whitespace().next().unwrap_or("")
                ),
                gflops: flops / 1e9,
                gbps: p.bytes_per_s / 1e9,
            });
        }
    }
    let caption = if peers.is_empty() {
        "roofline per op (circles: decode, triangles: prefill)"
    } else {
        "roofline per op (circles: decode, triangles: prefill; peers at the intensity of our row)"
    };
    let (plot, legend) = root.split_horizontally(OPS_SIZE.0 - OPS_LEGEND_WIDTH);
    roofline(&plot, &legend, caption, "FLOPs per byte moved", &points, &roofs)?;
    root.present()?;
    Ok(())
}

fn draw(run: &Run, svg: &mut String) -> DrawResult {
    let root = SVGBackend::with_string(svg, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let title = format!(
        "{} {}, {} path, commit {}",
        run.model.arch, run.model.source, run.model.dtype_path, run.commit
    );
    let root = root.titled(&title, ("sans-serif", 16))?;
    let panels = root.split_evenly((1, 3));
    for (panel, phase) in panels.iter().zip(["prefill", "decode"]) {
        panel_chart(run, panel, phase)?;
    }
    roofline_chart(run, &panels[2])?;
    root.present()?;
    Ok(())
}

/// A log–log panel; one series per (prompt, gen) in the order the run has them.
fn panel_chart(run: &Run, area: &Area, phase: &str) -> DrawResult {
    let all: Vec<_> = run.rows.iter().filter(|r| r.phase == phase && r.mean > 0.0).collect();
    let rows: Vec<_> = all.iter().copied().filter(|r| r.peer.is_none()).collect();
    if rows.is_empty() {
        return Ok(());
    }
    let mut series: Vec<(usize, usize)> = Vec::new();
    for r in &rows {
        if !series.contains(&(r.prompt, r.gen)) {
            series.push((r.prompt, r.gen));
        }
    }
    let ys = all.iter().flat_map(|r| std::iter::once(r.mean).chain(r.roofline.as_ref().map(|l| l.rate)));
    let (y_lo, y_hi) = ys.fold((f64::MAX, f64::MIN), |(lo, hi), y| (lo.min(y), hi.max(y)));
    let xs = rows.iter().map(|r| r.batch as f64);
    let (x_lo, x_hi) = xs.fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
    // Margins on log axes, so a single batch size or a flat line still has a range.
    let mut chart = ChartBuilder::on(area)
        .caption(format!("{phase} tok/s by batch"), ("sans-serif", 15))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d((x_lo / 1.5..x_hi * 1.5).log_scale(), (y_lo / 2.0..y_hi * 2.0).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("batch (sequences)")
        .y_desc("tok/s")
        // Batch sizes are whole numbers; rates need no decimals at chart scale.
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    for (i, &(prompt, gen)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let mine: Vec<_> = rows.iter().filter(|r| (r.prompt, r.gen) == (prompt, gen)).collect();
        let points: Vec<(f64, f64)> = mine.iter().map(|r| (r.batch as f64, r.mean)).collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(format!("p{prompt} n{gen}"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
        let roof: Vec<(f64, f64)> =
            mine.iter().filter_map(|r| r.roofline.as_ref().map(|l| (r.batch as f64, l.rate))).collect();
        if !roof.is_empty() {
            let light = color.mix(0.35);
            chart
                .draw_series(LineSeries::new(roof, light.stroke_width(1)))?
                .label(format!("p{prompt} n{gen} roofline"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], light.stroke_width(1)));
        }
        // Each peer's rows of this (prompt, gen): its own marker, in the series' colour.
        let theirs: Vec<_> = all.iter().filter(|r| (r.prompt, r.gen) == (prompt, gen)).collect();
        let mut peers: Vec<&str> = Vec::new();
        for (peer, _) in theirs.iter().filter_map(|r| r.peer_of()) {
            if !peers.contains(&peer) {
                peers.push(peer);
            }
        }
        for (k, peer) in peers.into_iter().enumerate() {
            let marker = PEER_MARKERS[k % PEER_MARKERS.len()];
            let at = theirs.iter().filter(|r| r.peer_of().is_some_and(|(p, _)| p == peer));
            chart
                .draw_series(at.map(|r| mark(marker, (r.batch as f64, r.mean), color)))?
                .label(format!("p{prompt} n{gen} {peer}"))
                .legend(move |(x, y)| mark(marker, (x + 9, y), color));
        }
    }
    // Lower right: rates grow with the batch, so that corner is the emptiest (upper right covered lines).
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// Each row as a point (arithmetic intensity of its pass, FLOP/s achieved), under the roof
/// `min(peak FLOP/s, intensity × bandwidth)` of every device with known peaks, at the run's numeric path.
fn roofline_chart(run: &Run, area: &Area) -> DrawResult {
    let points: Vec<Point> = run
        .rows
        .iter()
        .filter_map(|r| {
            let l = r.roofline.as_ref().filter(|l| l.bytes > 0.0 && l.flops > 0.0 && l.tokens > 0)?;
            Some(Point {
                series: r.phase.clone(),
                marker: Marker::of_phase(&r.phase),
                intensity: l.flops / l.bytes,
                gflops: r.mean / l.tokens as f64 * l.flops / 1e9,
            })
        })
        .collect();
    let roofs: Vec<Roof> = run
        .devices
        .iter()
        .filter_map(|d| {
            let p = d.peak.as_ref()?;
            let flops = match run.model.dtype_path.as_str() {
                "f32" => p.f32_flops,
                "w8a8" => p.fp8_flops,
                _ => p.bf16_flops,
            };
            (flops > 0.0 && p.bytes_per_s > 0.0).then(|| Roof {
                label: format!("{} roof", d.id),
                gflops: flops / 1e9,
                gbps: p.bytes_per_s / 1e9,
            })
        })
        .collect();
    // The legend below the plot: this panel is a third of the chart's width.
    let rows = roofs.len()
        + points.iter().map(|p| p.series.as_str()).collect::<std::collections::BTreeSet<_>>().len();
    let (_, height) = area.dim_in_pixel();
    let (plot, legend) = area.split_vertically(height as i32 - LEGEND_LINE * (rows as i32 + 1));
    roofline(&plot, &legend, "roofline (weights)", "FLOPs per weight byte", &points, &roofs)
}

/// A log–log roofline: each roof as `min(ceiling, intensity × bandwidth)`, each series of points in a
/// colour of its own (after the roofs' colours), in the order they first appear; the legend is drawn in
/// `legend`, an area beside the plot, so that it covers no point.
fn roofline(
    area: &Area,
    legend: &Area,
    caption: &str,
    x_desc: &str,
    points: &[Point],
    roofs: &[Roof],
) -> DrawResult {
    if points.is_empty() || roofs.is_empty() {
        return Ok(());
    }
    // The x range spans every point and every ridge (where a roof turns flat).
    let xs = points.iter().map(|p| p.intensity).chain(roofs.iter().map(|r| r.gflops / r.gbps));
    let (x_lo, x_hi) = xs.fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
    let (x_lo, x_hi) = (x_lo / 4.0, x_hi * 4.0);
    let ys = points.iter().map(|p| p.gflops).chain(roofs.iter().flat_map(|r| [r.gflops, x_lo * r.gbps]));
    let (y_lo, y_hi) = ys.fold((f64::MAX, f64::MIN), |(lo, hi), y| (lo.min(y), hi.max(y)));
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 15))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d((x_lo..x_hi).log_scale(), (y_lo / 2.0..y_hi * 2.0).log_scale())?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc("GFLOP/s")
        .x_label_formatter(&|x| tick(*x))
        .y_label_formatter(&|y| tick(*y))
        .draw()?;
    // What the legend lists, in drawing order: each roof's line, then each series' first marker.
    let mut entries: Vec<(String, Key)> = Vec::new();
    for (i, roof) in roofs.iter().enumerate() {
        let color = series_color(i);
        // Log-spaced samples of min(flops, x · bandwidth), so the bend is drawn where it is.
        let line: Vec<(f64, f64)> = (0..=64)
            .map(|k| x_lo * (x_hi / x_lo).powf(k as f64 / 64.0))
            .map(|x| (x, roof.gflops.min(x * roof.gbps)))
            .collect();
        chart.draw_series(LineSeries::new(line, color.stroke_width(2)))?;
        entries.push((roof.label.clone(), Key::Line(color)));
    }
    let mut series: Vec<&str> = Vec::new();
    for p in points {
        if !series.contains(&p.series.as_str()) {
            series.push(&p.series);
        }
    }
    let (mut ours, mut peers) = (0, 0);
    for name in series {
        let mine: Vec<&Point> = points.iter().filter(|p| p.series == name).collect();
        // The legend shows the series' first marker: a peer's, or decode's circle where both phases are.
        let Some(first) = mine.first().map(|p| p.marker) else { continue };
        let color = if PEER_MARKERS.contains(&first) {
            peers += 1;
            PEER_COLORS[(peers - 1) % PEER_COLORS.len()].to_rgba()
        } else {
            ours += 1;
            series_color(roofs.len() + ours - 1)
        };
        chart.draw_series(mine.iter().map(|p| mark(p.marker, (p.intensity, p.gflops), color)))?;
        entries.push((name.to_string(), Key::Mark(first, color)));
    }
    draw_legend(legend, &entries)
}

/// A legend entry's key: a roof's line or a series' marker.
#[derive(Clone, Copy)]
enum Key {
    Line(RGBAColor),
    Mark(Marker, RGBAColor),
}

/// One line per entry, top-down from the area's top-left corner: the key, then the label.
fn draw_legend(area: &Area, entries: &[(String, Key)]) -> DrawResult {
    let style = ("sans-serif", 13).into_font().color(&BLACK);
    for (i, (label, key)) in entries.iter().enumerate() {
        let y = LEGEND_LINE / 2 + 8 + LEGEND_LINE * i as i32;
        match *key {
            Key::Line(color) => area.draw(&PathElement::new(vec![(8, y), (26, y)], color.stroke_width(2)))?,
            Key::Mark(marker, color) => area.draw(&mark(marker, (17, y), color))?,
        }
        area.draw(&Text::new(label.as_str(), (34, y - 7), style.clone()))?;
    }
    Ok(())
}

/// The colours of roofs and of our series, in order: saturated and distinct on white (plotters'
/// Palette99 has pale ones a small marker vanishes in), none of them the peers' black or dark red.
const SERIES_COLORS: [RGBColor; 14] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(0, 0, 128),
    RGBColor(0, 128, 128),
    RGBColor(230, 25, 75),
    RGBColor(128, 128, 0),
    RGBColor(70, 240, 240),
];

fn series_color(i: usize) -> RGBAColor {
    SERIES_COLORS[i % SERIES_COLORS.len()].to_rgba()
}

/// A log axis' tick with two significant digits: 1e-5, 0.0012, 0.5, 120 (op rates span many decades).
fn tick(v: f64) -> String {
    if v.abs() < 1e-3 {
        return format!("{v:.0e}");
    }
    let decimals = (1.0 - v.abs().log10().floor()).clamp(0.0, 8.0) as usize;
    format!("{v:.decimals$}")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// The numbers after `attr="` in every `<tag ` element of an SVG.
    fn attrs(svg: &str, tag: &str, attr: &str) -> Vec<f64> {
        let open = format!("<{tag} ");
        let key = format!(" {attr}=\"");
        svg.split(open.as_str())
            .skip(1)
            .filter_map(|el| {
                // The element's attributes, each after a space (the first follows the tag's).
                let el = format!(" {el}");
                let at = el.find(key.as_str())? + key.len();
                el[at..].split('"').next()?.parse().ok()
            })
            .collect()
    }

    /// The `bench ops` roofline of a recorded run with both peers: its legend lies in the panel right of
    /// the plot (inside the plot it covered torch's points), and no point is drawn in that panel.
    #[test]
    fn the_ops_legend_lies_beside_the_plot() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("benches/results/2026-12-07-cpu-bench-ops-roofline-73005f9.json");
        let run = Run::load(&file).unwrap();
        let svg = ops_roofline(&run).unwrap();
        let plot_width = (OPS_SIZE.0 - OPS_LEGEND_WIDTH) as f64;
        for label in ["peer torch", "peer faer", "gemm on cpu:0", "cpu:0 f32"] {
            let at = svg.find(&format!("\n{label}")).unwrap_or_else(|| panic!("no legend entry {label:?}"));
            let x = attrs(&svg[svg[..at].rfind("<text ").unwrap()..], "text", "x")[0];
            assert!(x > plot_width, "{label:?} at x = {x}, inside the plot (width {plot_width})");
        }
        // Points (circles: decode rows and torch's rings) left of the panel; the legend's own keys at x = 17.
        let cx = attrs(&svg, "circle", "cx");
        assert!(cx.iter().filter(|&&x| x < plot_width).count() > 10, "the run's points are drawn");
        assert!(cx.iter().all(|&x| x < plot_width || x == plot_width + 17.0), "{cx:?}");
    }
}
