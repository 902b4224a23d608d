//! Looking at screenshots: is a region of the picture showing something?

/// Brightness statistics of a rectangle of a PNG screenshot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegionStats {
    /// Mean luma, 0-255.
    pub mean: f64,
    /// Standard deviation of luma: near 0 for a blank (single-colour) region.
    pub spread: f64,
    /// Distinct luma values seen (of 256).
    pub levels: usize,
}

/// Luma statistics of the rectangle `(x, y, width, height)` (in pixels) of
/// a PNG; the rectangle is clipped to the image.
pub fn region_stats(png_bytes: &[u8], (x, y, width, height): (f64, f64, f64, f64)) -> RegionStats {
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buffer = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buffer).expect("a PNG frame");
    let channels = info.color_type.samples();
    assert_eq!(info.bit_depth, png::BitDepth::Eight, "8-bit screenshots");
    let clip = |v: f64, max: u32| (v.max(0.0) as u32).min(max);
    let (x0, y0) = (clip(x, info.width), clip(y, info.height));
    let (x1, y1) = (clip(x + width, info.width), clip(y + height, info.height));
    let mut histogram = [0u64; 256];
    for row in y0..y1 {
        for col in x0..x1 {
            let at = (row as usize * info.line_size) + col as usize * channels;
            let px = &buffer[at..at + channels];
            let luma = if channels >= 3 {
                (0.299 * f64::from(px[0]) + 0.587 * f64::from(px[1]) + 0.114 * f64::from(px[2])) as usize
            } else {
                usize::from(px[0])
            };
            histogram[luma.min(255)] += 1;
        }
    }
    let count: u64 = histogram.iter().sum();
    assert!(count > 0, "the region {x0},{y0}-{x1},{y1} is outside the {}x{} screenshot", info.width, info.height);
    let mean = histogram.iter().enumerate().map(|(v, n)| v as f64 * *n as f64).sum::<f64>() / count as f64;
    let variance =
        histogram.iter().enumerate().map(|(v, n)| (v as f64 - mean).powi(2) * *n as f64).sum::<f64>() / count as f64;
    RegionStats { mean, spread: variance.sqrt(), levels: histogram.iter().filter(|n| **n > 0).count() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32, pixel: impl Fn(u32, u32) -> [u8; 3]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().unwrap();
        let pixel = &pixel;
        let data: Vec<u8> = (0..height).flat_map(|y| (0..width).flat_map(move |x| pixel(x, y))).collect();
        writer.write_image_data(&data).unwrap();
        drop(writer);
        out
    }

    #[test]
    fn a_flat_region_has_no_spread_and_a_pattern_has_some() {
        let image = png(40, 20, |x, _| if x < 20 { [0, 0, 0] } else { [(x * 12) as u8, 200, 30] });
        let blank = region_stats(&image, (0.0, 0.0, 20.0, 20.0));
        assert_eq!((blank.mean, blank.spread, blank.levels), (0.0, 0.0, 1));
        let pattern = region_stats(&image, (20.0, 0.0, 20.0, 20.0));
        assert!(pattern.spread > 10.0 && pattern.levels > 10, "{pattern:?}");
        let clipped = region_stats(&image, (30.0, 10.0, 100.0, 100.0));
        assert!(clipped.levels > 1);
    }
}
