//! QR rendering: PNG (no image library, just the `png` encoder) and SVG.

use qrcode::{Color, EcLevel, QrCode};

const SCALE: usize = 8;
const QUIET: usize = 4;

fn encode(data: &str) -> Result<QrCode, String> {
    QrCode::with_error_correction_level(data.as_bytes(), EcLevel::L).map_err(|e| e.to_string())
}

/// An 8-bit greyscale PNG, 8 pixels per module with a 4-module quiet zone.
pub fn png(data: &str) -> Result<Vec<u8>, String> {
    let code = encode(data)?;
    let modules = code.width();
    let colors = code.to_colors();
    let side = (modules + 2 * QUIET) * SCALE;
    let mut pixels = vec![255u8; side * side];
    for (i, color) in colors.iter().enumerate() {
        if *color == Color::Dark {
            let (mx, my) = (i % modules + QUIET, i / modules + QUIET);
            for y in my * SCALE..(my + 1) * SCALE {
                pixels[y * side + mx * SCALE..y * side + (mx + 1) * SCALE].fill(0);
            }
        }
    }
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, side as u32, side as u32);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().map_err(|e| e.to_string())?;
        writer.write_image_data(&pixels).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

pub fn svg(data: &str) -> Result<String, String> {
    let code = encode(data)?;
    Ok(code.render::<qrcode::render::svg::Color<'_>>().min_dimensions(256, 256).quiet_zone(true).build())
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_png_and_svg() {
        let data = "2@abc,def,ghi,jkl";
        let png = super::png(data).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let svg = super::svg(data).unwrap();
        assert!(svg.contains("<svg"));
    }
}
