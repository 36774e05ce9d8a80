//! `bench model --plot FILE.svg`: tok/s by batch size, prefill and decode side by side, one line per
//! (prompt, gen) with its roofline in the same colour, lighter — readable without the JSON. SVG only
//! (plotters' SVG backend, no font stack: the viewer renders the text).

use plotters::prelude::*;

use super::results::Run;

const SIZE: (u32, u32) = (1100, 460);

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
    let panels = root.split_evenly((1, 2));
    for (panel, phase) in panels.iter().zip(["prefill", "decode"]) {
        panel_chart(run, panel, phase)?;
    }
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
