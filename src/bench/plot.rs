//! `bench model --plot FILE.svg`: tok/s by batch size, prefill and decode side by side, one line per
//! (prompt, gen) with its roofline in the same colour, lighter; and a roofline chart (achieved FLOP/s
//! against FLOPs per weight byte, under each device's roof) — readable without the JSON. SVG only
//! (plotters' SVG backend, no font stack: the viewer renders the text).

use plotters::prelude::*;

use super::results::Run;

const SIZE: (u32, u32) = (1500, 460);

/// The chart as SVG text.
pub fn tok_s_by_batch(run: &Run) -> Result<String, String> {
    let mut svg = String::new();
    draw(run, &mut svg).map_err(|e| format!("--plot: drawing the chart: {e}"))?;
    Ok(svg)
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

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
fn panel_chart(run: &Run, area: &DrawingArea<SVGBackend, plotters::coord::Shift>, phase: &str) -> DrawResult {
    let rows: Vec<_> = run.rows.iter().filter(|r| r.phase == phase && r.mean > 0.0).collect();
    if rows.is_empty() {
        return Ok(());
    }
    let mut series: Vec<(usize, usize)> = Vec::new();
    for r in &rows {
        if !series.contains(&(r.prompt, r.gen)) {
            series.push((r.prompt, r.gen));
        }
    }
    let ys = rows.iter().flat_map(|r| std::iter::once(r.mean).chain(r.roofline.as_ref().map(|l| l.rate)));
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
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.85)).border_style(BLACK).draw()?;
    Ok(())
}

/// Each row as a point (arithmetic intensity of its pass, FLOP/s achieved), under the roof
/// `min(peak FLOP/s, intensity × bandwidth)` of every device with known peaks, at the run's numeric path.
fn roofline_chart(run: &Run, area: &DrawingArea<SVGBackend, plotters::coord::Shift>) -> DrawResult {
    // (phase, intensity, GFLOP/s achieved).
    let points: Vec<(&str, f64, f64)> = run
        .rows
        .iter()
        .filter_map(|r| {
            let l = r.roofline.as_ref().filter(|l| l.bytes > 0.0 && l.flops > 0.0 && l.tokens > 0)?;
            Some((r.phase.as_str(), l.flops / l.bytes, r.mean / l.tokens as f64 * l.flops / 1e9))
        })
        .collect();
    let roofs: Vec<(&str, f64, f64)> = run
        .devices
        .iter()
        .filter_map(|d| {
            let p = d.peak.as_ref()?;
            let flops = match run.model.dtype_path.as_str() {
                "f32" => p.f32_flops,
                "w8a8" => p.fp8_flops,
                _ => p.bf16_flops,
            };
            (flops > 0.0 && p.bytes_per_s > 0.0).then_some((d.id.as_str(), flops / 1e9, p.bytes_per_s / 1e9))
        })
        .collect();
    if points.is_empty() || roofs.is_empty() {
        return Ok(());
    }
    // The x range spans every point and every ridge (where a roof turns flat).
    let xs = points.iter().map(|p| p.1).chain(roofs.iter().map(|r| r.1 / r.2));
    let (x_lo, x_hi) = xs.fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
    let (x_lo, x_hi) = (x_lo / 4.0, x_hi * 4.0);
    let ys = points.iter().map(|p| p.2).chain(roofs.iter().flat_map(|r| [r.1, x_lo * r.2]));
    let (y_lo, y_hi) = ys.fold((f64::MAX, f64::MIN), |(lo, hi), y| (lo.min(y), hi.max(y)));
    let mut chart = ChartBuilder::on(area)
        .caption("roofline (weights)", ("sans-serif", 15))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d((x_lo..x_hi).log_scale(), (y_lo / 2.0..y_hi * 2.0).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("FLOPs per weight byte")
        .y_desc("GFLOP/s")
        .x_label_formatter(&|x| format!("{x:.2}"))
        .y_label_formatter(&|y| format!("{y:.1}"))
        .draw()?;
    for (i, &(id, flops, bw)) in roofs.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        // Log-spaced samples of min(flops, x · bandwidth), so the bend is drawn where it is.
        let roof: Vec<(f64, f64)> = (0..=64)
            .map(|k| x_lo * (x_hi / x_lo).powf(k as f64 / 64.0))
            .map(|x| (x, flops.min(x * bw)))
            .collect();
        chart
            .draw_series(LineSeries::new(roof, color.stroke_width(2)))?
            .label(format!("{id} roof"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
    }
    for (phase, color) in [("prefill", BLUE), ("decode", RED)] {
        let mine: Vec<(f64, f64)> = points.iter().filter(|p| p.0 == phase).map(|p| (p.1, p.2)).collect();
        if mine.is_empty() {
            continue;
        }
        chart
            .draw_series(mine.iter().map(|&p| Circle::new(p, 4, color.filled())))?
            .label(phase)
            .legend(move |(x, y)| Circle::new((x + 9, y), 4, color.filled()));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.85)).border_style(BLACK).draw()?;
    Ok(())
}
