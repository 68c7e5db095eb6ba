//! What an upload's bytes really are: the type read from their first bytes (`infer`),
//! whether they are a program, for WAV and MP4-family recordings how long they play,
//! and for raster images their dimensions, a thumbnail and
//! a copy without EXIF, GPS and text metadata, decoded under limits so a small file
//! that expands to gigabytes of pixels (a decompression bomb) is refused, not decoded.
//!
//! CPU work only, no I/O: the upload service runs it on a blocking thread and the
//! `Upload` aggregate judges the result.

use std::io::Cursor;

use parley_aggregates::upload::{Arrived, Metadata};
use sha2::{Digest, Sha256};

/// Longest side of a thumbnail, in pixels.
pub const THUMBNAIL_SIDE: u32 = 320;
/// Widest or tallest image decoded.
const MAX_SIDE: u32 = 16_384;
/// Most pixels decoded (40 megapixels: any phone photo, no poster-sized bomb).
const MAX_PIXELS: u64 = 40_000_000;
/// Most memory one decode may allocate.
const MAX_ALLOC: u64 = 256 * 1024 * 1024;

/// The result of inspecting an upload.
pub struct Inspected {
    pub arrived: Arrived,
    /// The content to serve: the upload itself, less any image metadata.
    pub content: Vec<u8>,
    /// A PNG no larger than [`THUMBNAIL_SIDE`] on its longest side, for images.
    pub thumbnail: Option<Vec<u8>>,
}

/// Inspects `bytes`; `thumbnail_key` is recorded in the metadata when a thumbnail is made.
pub fn inspect(bytes: Vec<u8>, thumbnail_key: &str) -> Inspected {
    let size = bytes.len() as u64;
    let kind = infer::get(&bytes);
    let sniffed_type = kind.map(|kind| kind.mime_type().to_owned());
    let executable = kind.is_some_and(|kind| kind.matcher_type() == infer::MatcherType::App)
        || bytes.starts_with(b"#!");
    let format = sniffed_type.as_deref().and_then(raster_format);
    let mut metadata = Metadata::default();
    let mut undecodable = None;
    let mut thumbnail = None;
    let mut content = bytes;
    if let (Some(format), false) = (format, executable) {
        match decode(&content, format) {
            Ok(image) => {
                metadata.width = Some(image.width());
                metadata.height = Some(image.height());
                match make_thumbnail(&image) {
                    Ok(png) => {
                        thumbnail = Some(png);
                        metadata.thumbnail_key = Some(thumbnail_key.to_owned());
                    }
                    Err(error) => tracing::warn!(%error, "cannot make a thumbnail"),
                }
                content = strip_metadata(content, format);
            }
            Err(reason) => undecodable = Some(reason),
        }
    }
    if !executable {
        metadata.duration_ms = sniffed_type
            .as_deref()
            .and_then(|t| duration_ms(&content, t));
    }
    metadata.sha256 = hex::encode(Sha256::digest(&content));
    Inspected {
        arrived: Arrived {
            size,
            sniffed_type,
            executable,
            undecodable,
            metadata,
        },
        content,
        thumbnail,
    }
}

/// How long a recording plays, read from its container's header: WAV (data size over
/// byte rate) and the MP4 family (`moov/mvhd`: M4A voice notes, MP4 and QuickTime
/// video). Other formats have no duration recorded.
fn duration_ms(bytes: &[u8], media_type: &str) -> Option<u64> {
    match media_type {
        "audio/x-wav" | "audio/wav" => wav_duration_ms(bytes),
        "video/mp4" | "audio/m4a" | "audio/mp4" | "video/quicktime" | "video/x-m4v" => {
            mp4_duration_ms(bytes)
        }
        _ => None,
    }
}

fn wav_duration_ms(bytes: &[u8]) -> Option<u64> {
    if bytes.get(..4)? != b"RIFF" || bytes.get(8..12)? != b"WAVE" {
        return None;
    }
    let (mut at, mut byte_rate, mut data) = (12usize, None, None);
    while let (Some(kind), Some(size)) = (bytes.get(at..at + 4), bytes.get(at + 4..at + 8)) {
        let size = u64::from(u32::from_le_bytes(size.try_into().ok()?));
        match kind {
            b"fmt " => {
                let rate = bytes.get(at + 16..at + 20)?;
                byte_rate = Some(u64::from(u32::from_le_bytes(rate.try_into().ok()?)));
            }
            b"data" => data = Some(size),
            _ => {}
        }
        if byte_rate.is_some() && data.is_some() {
            break;
        }
        at = at
            .checked_add(8)?
            .checked_add(usize::try_from(size + (size & 1)).ok()?)?;
    }
    let byte_rate = byte_rate.filter(|rate| *rate > 0)?;
    data?.checked_mul(1000).map(|ms| ms / byte_rate)
}

/// The boxes directly inside `bytes`, as (type, contents).
fn mp4_boxes(bytes: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let size = u64::from(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
        let kind = bytes.get(at + 4..at + 8)?;
        let (header, size) = match size {
            0 => (8, (bytes.len() - at) as u64),
            1 => (
                16,
                u64::from_be_bytes(bytes.get(at + 8..at + 16)?.try_into().ok()?),
            ),
            size => (8, size),
        };
        let end = at.checked_add(usize::try_from(size).ok()?)?;
        let contents = bytes.get(at + header..end)?;
        at = end;
        Some((kind, contents))
    })
}

fn mp4_duration_ms(bytes: &[u8]) -> Option<u64> {
    let (_, moov) = mp4_boxes(bytes).find(|(kind, _)| *kind == b"moov")?;
    let (_, mvhd) = mp4_boxes(moov).find(|(kind, _)| *kind == b"mvhd")?;
    let be32 = |at: usize| -> Option<u64> {
        Some(u64::from(u32::from_be_bytes(
            mvhd.get(at..at + 4)?.try_into().ok()?,
        )))
    };
    let (timescale, duration) = match mvhd.first()? {
        0 => (be32(12)?, be32(16)?),
        1 => (
            be32(20)?,
            u64::from_be_bytes(mvhd.get(24..32)?.try_into().ok()?),
        ),
        _ => return None,
    };
    if timescale == 0 {
        return None;
    }
    u64::try_from(u128::from(duration) * 1000 / u128::from(timescale)).ok()
}

/// Raster formats decoded for dimensions and thumbnails.
fn raster_format(media_type: &str) -> Option<image::ImageFormat> {
    Some(match media_type {
        "image/png" => image::ImageFormat::Png,
        "image/jpeg" => image::ImageFormat::Jpeg,
        "image/webp" => image::ImageFormat::WebP,
        "image/gif" => image::ImageFormat::Gif,
        _ => return None,
    })
}

fn decode(bytes: &[u8], format: image::ImageFormat) -> Result<image::DynamicImage, String> {
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    // The header alone says how large the image is: refuse a bomb before decoding it.
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(limits.clone());
    let (width, height) = reader.into_dimensions().map_err(describe)?;
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(format!(
            "{width}×{height} pixels is more than {MAX_PIXELS} pixels"
        ));
    }
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(limits);
    reader.decode().map_err(describe)
}

fn describe(error: image::ImageError) -> String {
    match error {
        image::ImageError::Limits(_) => "it is larger than allowed when decoded".to_owned(),
        other => other.to_string(),
    }
}

fn make_thumbnail(image: &image::DynamicImage) -> Result<Vec<u8>, image::ImageError> {
    let small = if image.width().max(image.height()) > THUMBNAIL_SIDE {
        image.thumbnail(THUMBNAIL_SIDE, THUMBNAIL_SIDE)
    } else {
        image.clone()
    };
    let mut out = Cursor::new(Vec::new());
    small.write_to(&mut out, image::ImageFormat::Png)?;
    Ok(out.into_inner())
}

/// The image without its metadata (EXIF with GPS, XMP, IPTC, text chunks, comments),
/// by dropping those chunks rather than re-encoding: the pixels stay exactly as sent,
/// and a file that carries no metadata is served byte for byte. A file whose chunk
/// structure cannot be followed is returned unchanged only if it had decoded, which it
/// has by the time this runs.
fn strip_metadata(bytes: Vec<u8>, format: image::ImageFormat) -> Vec<u8> {
    let stripped = match format {
        image::ImageFormat::Png => strip_png(&bytes),
        image::ImageFormat::Jpeg => strip_jpeg(&bytes),
        image::ImageFormat::WebP => strip_webp(&bytes),
        _ => None,
    };
    stripped.unwrap_or(bytes)
}

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

fn strip_png(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(bytes.get(..8).filter(|sig| *sig == PNG_SIGNATURE)?);
    let mut at = 8;
    while at < bytes.len() {
        let length = u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize;
        let end = at.checked_add(12)?.checked_add(length)?;
        let chunk = bytes.get(at..end)?;
        let kind = &chunk[4..8];
        if !matches!(kind, b"eXIf" | b"tEXt" | b"zTXt" | b"iTXt" | b"tIME") {
            out.extend_from_slice(chunk);
        }
        at = end;
        if kind == b"IEND" {
            break;
        }
    }
    Some(out)
}

fn strip_jpeg(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(bytes.get(..2).filter(|soi| *soi == [0xFF, 0xD8])?);
    let mut at = 2;
    loop {
        let marker = *bytes.get(at + 1)?;
        if *bytes.get(at)? != 0xFF {
            return None;
        }
        // Start of scan: the entropy-coded image data follows to the end, unchanged.
        if marker == 0xDA {
            out.extend_from_slice(&bytes[at..]);
            return Some(out);
        }
        let length = usize::from(u16::from_be_bytes([
            *bytes.get(at + 2)?,
            *bytes.get(at + 3)?,
        ]));
        let end = at.checked_add(2)?.checked_add(length)?;
        let segment = bytes.get(at..end)?;
        // APP1 (EXIF, XMP), APP12–APP13 (IPTC, Photoshop), COM. APP0 (JFIF), APP2
        // (ICC colour profiles) and APP14 (Adobe colour transform) affect rendering.
        if !matches!(marker, 0xE1 | 0xEC | 0xED | 0xFE) {
            out.extend_from_slice(segment);
        }
        at = end;
    }
}

fn strip_webp(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.get(..4)? != b"RIFF" || bytes.get(8..12)? != b"WEBP" {
        return None;
    }
    let mut body = Vec::with_capacity(bytes.len());
    body.extend_from_slice(b"WEBP");
    let mut at = 12;
    while at < bytes.len() {
        let kind = bytes.get(at..at + 4)?;
        let length = u32::from_le_bytes(bytes.get(at + 4..at + 8)?.try_into().ok()?) as usize;
        let padded = length + (length & 1);
        let end = at.checked_add(8)?.checked_add(padded)?.min(bytes.len());
        let chunk = bytes.get(at..end)?;
        match kind {
            b"EXIF" | b"XMP " => {}
            b"VP8X" => {
                let mut chunk = chunk.to_vec();
                // Flags: the file no longer announces EXIF (bit 3) or XMP (bit 2).
                if let Some(flags) = chunk.get_mut(8) {
                    *flags &= !0b0000_1100;
                }
                body.extend_from_slice(&chunk);
            }
            _ => body.extend_from_slice(chunk),
        }
        at = end;
    }
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&u32::try_from(body.len()).ok()?.to_le_bytes());
    out.extend_from_slice(&body);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let image = image::RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, 7])
        });
        let mut out = Cursor::new(Vec::new());
        image
            .write_to(&mut out, image::ImageFormat::Png)
            .expect("encode");
        out.into_inner()
    }

    /// `png` with a text chunk carrying `secret` inserted after the header chunk.
    fn png_with_text(secret: &[u8]) -> Vec<u8> {
        let clean = png(4, 4);
        let ihdr_end = 8 + 12 + 13;
        let mut data = b"Comment\0".to_vec();
        data.extend_from_slice(secret);
        let mut typed = b"tEXt".to_vec();
        typed.extend_from_slice(&data);
        let mut chunk = (data.len() as u32).to_be_bytes().to_vec();
        chunk.extend_from_slice(&typed);
        chunk.extend_from_slice(&crc32(&typed).to_be_bytes());
        let mut out = clean[..ihdr_end].to_vec();
        out.extend_from_slice(&chunk);
        out.extend_from_slice(&clean[ihdr_end..]);
        out
    }

    #[test]
    fn a_clean_png_is_kept_byte_for_byte_with_dimensions_and_a_thumbnail() {
        let bytes = png(640, 480);
        let inspected = inspect(bytes.clone(), "thumbs/x");
        assert_eq!(inspected.content, bytes);
        assert_eq!(inspected.arrived.metadata.width, Some(640));
        assert_eq!(inspected.arrived.metadata.height, Some(480));
        assert_eq!(inspected.arrived.sniffed_type.as_deref(), Some("image/png"));
        let thumb = image::load_from_memory(&inspected.thumbnail.expect("thumbnail")).expect("png");
        assert_eq!((thumb.width(), thumb.height()), (320, 240));
    }

    #[test]
    fn png_text_metadata_is_dropped() {
        let inspected = inspect(png_with_text(b"GPS 48.85,2.35"), "thumbs/x");
        assert_eq!(inspected.content, png(4, 4));
        assert_eq!(inspected.arrived.metadata.width, Some(4));
    }

    #[test]
    fn jpeg_exif_is_dropped_and_the_image_still_decodes() {
        let mut jpeg = Cursor::new(Vec::new());
        image::RgbImage::from_pixel(8, 8, image::Rgb([200, 10, 10]))
            .write_to(&mut jpeg, image::ImageFormat::Jpeg)
            .expect("encode");
        let jpeg = jpeg.into_inner();
        let exif = b"Exif\0\0GPSDATA-SECRET";
        let mut with_exif = jpeg[..2].to_vec();
        with_exif.extend_from_slice(&[0xFF, 0xE1]);
        with_exif.extend_from_slice(&((exif.len() + 2) as u16).to_be_bytes());
        with_exif.extend_from_slice(exif);
        with_exif.extend_from_slice(&jpeg[2..]);
        let inspected = inspect(with_exif, "thumbs/x");
        assert_eq!(inspected.content, jpeg);
        assert!(image::load_from_memory(&inspected.content).is_ok());
    }

    #[test]
    fn an_image_that_would_decode_to_too_many_pixels_is_not_decoded() {
        // A valid header announcing 20,000 × 20,000 pixels; the data hardly matters.
        let mut bomb = PNG_SIGNATURE.to_vec();
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend_from_slice(&20_000u32.to_be_bytes());
        ihdr.extend_from_slice(&20_000u32.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        let crc = crc32(&ihdr);
        bomb.extend_from_slice(&13u32.to_be_bytes());
        bomb.extend_from_slice(&ihdr);
        bomb.extend_from_slice(&crc.to_be_bytes());
        let inspected = inspect(bomb, "thumbs/x");
        assert!(inspected.arrived.undecodable.is_some());
        assert!(inspected.thumbnail.is_none());
    }

    #[test]
    fn programs_are_recognised() {
        let mut elf = b"\x7fELF\x02\x01\x01\0".to_vec();
        elf.resize(64, 0);
        assert!(inspect(elf, "thumbs/x").arrived.executable);
        assert!(
            inspect(b"#!/bin/sh\nrm -rf /\n".to_vec(), "thumbs/x")
                .arrived
                .executable
        );
        assert!(!inspect(b"hello".to_vec(), "thumbs/x").arrived.executable);
    }

    #[test]
    fn a_wav_records_how_long_it_plays() {
        // 8 kHz, mono, 8 bits: 8,000 bytes a second; 12,000 bytes of sound.
        let mut wav = b"RIFF".to_vec();
        wav.extend_from_slice(&(36u32 + 12_000).to_le_bytes());
        wav.extend_from_slice(b"WAVEfmt ");
        wav.extend_from_slice(&16u32.to_le_bytes());
        wav.extend_from_slice(&1u16.to_le_bytes());
        wav.extend_from_slice(&1u16.to_le_bytes());
        wav.extend_from_slice(&8_000u32.to_le_bytes());
        wav.extend_from_slice(&8_000u32.to_le_bytes());
        wav.extend_from_slice(&1u16.to_le_bytes());
        wav.extend_from_slice(&8u16.to_le_bytes());
        wav.extend_from_slice(b"data");
        wav.extend_from_slice(&12_000u32.to_le_bytes());
        wav.resize(wav.len() + 12_000, 128);
        let inspected = inspect(wav, "thumbs/x");
        assert_eq!(
            inspected.arrived.sniffed_type.as_deref(),
            Some("audio/x-wav")
        );
        assert_eq!(inspected.arrived.metadata.duration_ms, Some(1_500));
    }

    #[test]
    fn an_mp4_records_how_long_it_plays() {
        fn mp4_box(kind: &[u8], contents: &[u8]) -> Vec<u8> {
            let mut out = ((contents.len() + 8) as u32).to_be_bytes().to_vec();
            out.extend_from_slice(kind);
            out.extend_from_slice(contents);
            out
        }
        let mut mvhd = vec![0u8; 4 + 8];
        mvhd.extend_from_slice(&600u32.to_be_bytes());
        mvhd.extend_from_slice(&(600u32 * 42 + 300).to_be_bytes());
        mvhd.resize(100, 0);
        let mut file = mp4_box(b"ftyp", b"isom\0\0\x02\0isomiso2mp41");
        file.extend(mp4_box(b"moov", &mp4_box(b"mvhd", &mvhd)));
        let inspected = inspect(file, "thumbs/x");
        assert_eq!(inspected.arrived.sniffed_type.as_deref(), Some("video/mp4"));
        assert_eq!(inspected.arrived.metadata.duration_ms, Some(42_500));
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for byte in data {
            crc ^= u32::from(*byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
}
