//! QR codes as inline SVG (no image files, no CDN).

use qrcode::QrCode;
use qrcode::render::svg;

/// An SVG QR code of `text`, or an empty string if the text cannot be encoded.
pub fn svg(text: &str) -> String {
    svg_min(text, 140)
}

/// The same, at least `px` wide: a long text (a signed result code) needs more room to scan.
pub fn svg_min(text: &str, px: u32) -> String {
    match QrCode::new(text.as_bytes()) {
        Ok(code) => code
            .render::<svg::Color<'_>>()
            .min_dimensions(px, px)
            .quiet_zone(true)
            .build(),
        Err(e) => {
            tracing::warn!(%e, "QR code not rendered");
            String::new()
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn receipt_number_renders_as_svg() {
        let svg = super::svg("430181101001-20261122-0007");
        assert!(svg.contains("<svg") && svg.contains("</svg>"));
    }
}
