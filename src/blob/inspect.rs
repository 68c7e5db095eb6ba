//! What an upload's bytes really are: the type read from their first bytes (`infer`),
//! whether they are a program, for audio and video how long they play and how large
//! the picture is (symphonia's demuxers: MP3, Ogg, FLAC, WAV, MP4/QuickTime, WebM and
//! Matroska), and for raster images their dimensions, a thumbnail and
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
    if let (Some(media_type), false) = (sniffed_type.as_deref(), executable) {
        let found = recording(&content, media_type);
        metadata.duration_ms = found.duration_ms;
        if found.width.is_some() {
            metadata.width = found.width;
            metadata.height = found.height;
        }
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

/// Container formats whose headers say how long they play (and, for video, how large the
/// picture is), by the type `infer` read from their first bytes. Nothing else is handed to
/// a demuxer: a PDF or an archive has no duration to find.
fn is_recording(media_type: &str) -> bool {
    matches!(
        media_type,
        "audio/mpeg"
            | "audio/ogg"
            | "audio/opus"
            | "video/ogg"
            | "audio/x-flac"
            | "audio/flac"
            | "audio/x-wav"
            | "audio/wav"
            | "audio/m4a"
            | "audio/mp4"
            | "video/mp4"
            | "video/quicktime"
            | "video/x-m4v"
            | "audio/webm"
            | "video/webm"
            | "video/x-matroska"
    )
}

/// What a recording's container says about it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Recording {
    duration_ms: Option<u64>,
    /// The picture size of the first video track, for video.
    width: Option<u32>,
    height: Option<u32>,
}

/// The most bytes of tags (ID3, Vorbis comments, Matroska tags) and of embedded pictures
/// (cover art) a demuxer may hold while reading the headers: none of it is kept.
const MAX_TAG_BYTES: u64 = 64 * 1024;

/// Reads a recording's headers with symphonia's demuxers (MP3, Ogg Vorbis and Opus, FLAC,
/// WAV, the MP4 family and Matroska/WebM), decoding nothing.
///
/// The bytes are hostile. Symphonia is written for that: every read is checked against
/// the data actually there (a declared size only bounds what is read, buffers grow as
/// bytes arrive rather than being allocated from a length field, tables start small), so
/// memory stays within a few times the upload, which is itself capped; the probe scans
/// at most 1 MB for a format marker, and opening a reader reads headers (and, for Ogg,
/// the last pages), never the packets. Tags and pictures are capped at
/// [`MAX_TAG_BYTES`]. A panic inside a demuxer on input its authors did not foresee
/// costs the upload its duration, not the request.
fn recording(bytes: &[u8], media_type: &str) -> Recording {
    if !is_recording(media_type) {
        return Recording::default();
    }
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read_recording(bytes))) {
        Ok(found) => found,
        Err(_) => {
            tracing::warn!(
                media_type,
                "a demuxer panicked on an upload; no duration recorded"
            );
            Recording::default()
        }
    }
}

fn read_recording(bytes: &[u8]) -> Recording {
    use symphonia::core::codecs::audio::well_known::CODEC_ID_OPUS;
    use symphonia::core::codecs::CodecParameters;
    use symphonia::core::common::Limit;
    use symphonia::core::formats::probe::Hint;
    use symphonia::core::formats::{FormatOptions, Track};
    use symphonia::core::io::MediaSourceStream;
    use symphonia::core::meta::MetadataOptions;
    use symphonia::core::units::Duration;

    let source = MediaSourceStream::new(Box::new(Cursor::new(bytes)), Default::default());
    let metadata = MetadataOptions::default()
        .limit_tag_bytes(Limit::Maximum(MAX_TAG_BYTES as usize))
        .limit_visual_bytes(Limit::Maximum(MAX_TAG_BYTES as usize));
    let Ok(reader) = symphonia::default::get_probe().probe(
        &Hint::new(),
        source,
        FormatOptions::default(),
        metadata,
    ) else {
        return Recording::default();
    };
    let millis = |time: Option<symphonia::core::units::Time>| {
        time.and_then(|time| u64::try_from(time.as_millis()).ok())
    };
    // How long one track plays. An Ogg Opus stream's granule positions count the
    // encoder's pre-skip, which the player drops (RFC 7845, section 4.2); symphonia
    // reports it as the track's delay.
    let track_ms = |track: &Track| {
        let time_base = track.time_base?;
        let mut duration = track.duration?.get();
        if let Some(CodecParameters::Audio(audio)) = &track.codec_params {
            if audio.codec == CODEC_ID_OPUS && reader.format_info().short_name == "ogg" {
                duration = duration.saturating_sub(u64::from(track.delay.unwrap_or(0)));
            }
        }
        millis(time_base.calc_duration(Duration::new(duration)))
    };
    // The container's own figure where it has one (MP4's movie header, which already
    // allows for edit lists that trim an AAC encoder's priming; Matroska's segment
    // duration); else the longest track. Ogg has no figure of its own: symphonia's is
    // its first track's, before the pre-skip is taken off.
    let info = reader.media_info();
    let whole = match reader.format_info().short_name {
        "ogg" => None,
        _ => millis(
            info.time_base
                .zip(info.duration)
                .and_then(|(base, duration)| base.calc_duration(duration)),
        ),
    };
    let duration_ms = whole.or_else(|| reader.tracks().iter().filter_map(track_ms).max());
    let picture = reader
        .tracks()
        .iter()
        .find_map(|track| match &track.codec_params {
            Some(CodecParameters::Video(video)) => video.width.zip(video.height),
            _ => None,
        })
        .filter(|(width, height)| *width > 0 && *height > 0);
    Recording {
        duration_ms,
        width: picture.map(|(width, _)| u32::from(width)),
        height: picture.map(|(_, height)| u32::from(height)),
    }
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

    /// A fixture's name and bytes, the type `infer` reads from it, how long the encoder
    /// was told it plays, and its picture size.
    type Fixture = (
        &'static str,
        &'static [u8],
        &'static str,
        u64,
        Option<(u32, u32)>,
    );

    /// Recordings written by tests/fixtures/media/make.py.
    const RECORDINGS: &[Fixture] = &[
        (
            "tone.wav",
            include_bytes!("../../tests/fixtures/media/tone.wav"),
            "audio/x-wav",
            1_250,
            None,
        ),
        (
            "tone.flac",
            include_bytes!("../../tests/fixtures/media/tone.flac"),
            "audio/x-flac",
            1_500,
            None,
        ),
        // 28,000 samples sent; the Vorbis encoder pads the last block, and the stream's
        // final granule position says 28,032 (as FFmpeg's own probe reads it too).
        (
            "tone.ogg",
            include_bytes!("../../tests/fixtures/media/tone.ogg"),
            "audio/ogg",
            1_752,
            None,
        ),
        // 96,000 samples; the granule positions add the 312-sample pre-skip.
        (
            "tone.opus",
            include_bytes!("../../tests/fixtures/media/tone.opus"),
            "audio/opus",
            2_000,
            None,
        ),
        // The LAME header's delay and padding are taken off: 36,000 samples at 16 kHz.
        (
            "tone.mp3",
            include_bytes!("../../tests/fixtures/media/tone.mp3"),
            "audio/mpeg",
            2_250,
            None,
        ),
        // The AAC priming is cut by the edit list the movie header's duration allows for.
        (
            "tone.m4a",
            include_bytes!("../../tests/fixtures/media/tone.m4a"),
            "audio/m4a",
            1_000,
            None,
        ),
        // A voice note as browsers record it: Opus in WebM, whose segment duration runs
        // to the end of the last Opus packet.
        (
            "voice.webm",
            include_bytes!("../../tests/fixtures/media/voice.webm"),
            "video/webm",
            1_008,
            None,
        ),
        (
            "clip.mp4",
            include_bytes!("../../tests/fixtures/media/clip.mp4"),
            "video/mp4",
            1_500,
            Some((160, 120)),
        ),
        (
            "clip.mov",
            include_bytes!("../../tests/fixtures/media/clip.mov"),
            "video/quicktime",
            2_000,
            Some((176, 144)),
        ),
        // VP8 for 1.2 s with Opus that ends 8 ms later.
        (
            "clip.webm",
            include_bytes!("../../tests/fixtures/media/clip.webm"),
            "video/webm",
            1_208,
            Some((128, 96)),
        ),
        // `infer` calls any Matroska file WebM unless its header has one exact layout.
        (
            "clip.mkv",
            include_bytes!("../../tests/fixtures/media/clip.mkv"),
            "video/webm",
            500,
            Some((96, 64)),
        ),
    ];

    #[test]
    fn each_recording_format_reports_its_exact_duration_and_picture_size() {
        for (name, bytes, media_type, duration_ms, picture) in RECORDINGS {
            let inspected = inspect(bytes.to_vec(), "thumbs/x");
            let arrived = &inspected.arrived;
            assert_eq!(arrived.sniffed_type.as_deref(), Some(*media_type), "{name}");
            assert!(
                !arrived.executable && arrived.undecodable.is_none(),
                "{name}"
            );
            assert_eq!(arrived.metadata.duration_ms, Some(*duration_ms), "{name}");
            let found = arrived.metadata.width.zip(arrived.metadata.height);
            assert_eq!(found, *picture, "{name}");
            // Recordings are served as sent, and get no thumbnail.
            assert_eq!(inspected.content, *bytes, "{name}");
            assert!(inspected.thumbnail.is_none(), "{name}");
        }
    }

    /// A deterministic stream of bytes (xorshift), so a failure repeats.
    fn noise(seed: u64) -> impl Iterator<Item = u8> {
        let mut state = seed | 1;
        std::iter::repeat_with(move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
    }

    /// Cut short anywhere, or with bytes overwritten, no recording makes a demuxer
    /// panic (`read_recording` catches nothing), and nothing absurd is reported.
    #[test]
    fn truncated_and_corrupted_recordings_are_read_without_panicking() {
        for (index, (name, bytes, _, _, _)) in RECORDINGS.iter().enumerate() {
            let cuts = (0..bytes.len()).step_by((bytes.len() / 64).max(1));
            for cut in cuts.chain([4, 8, 12, 16, 32, 64]) {
                let found = read_recording(&bytes[..cut.min(bytes.len())]);
                assert!(
                    found.width.is_none_or(|w| w <= u32::from(u16::MAX)),
                    "{name} cut at {cut}"
                );
            }
            let mut random = noise(index as u64 + 1);
            for round in 0..48u64 {
                let mut corrupt = bytes.to_vec();
                // A few bytes past the magic numbers, so the same demuxer still opens it.
                for _ in 0..(1 + round % 8) {
                    let hi = u64::from(random.next().unwrap_or(0)) << 8;
                    let at = 12
                        + (hi | u64::from(random.next().unwrap_or(0))) as usize
                            % (corrupt.len() - 12);
                    corrupt[at] = random.next().unwrap_or(0);
                }
                let _ = read_recording(&corrupt);
            }
        }
    }

    #[test]
    fn lying_headers_are_not_believed() {
        // A WAV whose RIFF and data chunks claim 4 GiB, with 16 bytes of sound.
        let mut wav = b"RIFF\xff\xff\xff\xffWAVEfmt ".to_vec();
        wav.extend_from_slice(&16u32.to_le_bytes());
        wav.extend_from_slice(&[1, 0, 1, 0]);
        wav.extend_from_slice(&8_000u32.to_le_bytes());
        wav.extend_from_slice(&8_000u32.to_le_bytes());
        wav.extend_from_slice(&[1, 0, 8, 0]);
        wav.extend_from_slice(b"LIST\xff\xff\xff\xf0");
        wav.extend_from_slice(&[0; 16]);
        let _ = read_recording(&wav);
        // MP4 boxes that claim more than there is, nested, and a Matroska element whose
        // size is the largest a vint can say.
        let mut mp4 = b"\0\0\0\x18ftypisom\0\0\x02\0isomiso2".to_vec();
        mp4.extend_from_slice(b"\xff\xff\xff\xffmoov\x7f\xff\xff\xfftrak\x7f\xff\xff\xffstsz");
        mp4.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(read_recording(&mp4), Recording::default());
        let mut mkv = vec![
            0x1A, 0x45, 0xDF, 0xA3, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        ];
        mkv.extend_from_slice(&[0x42, 0x82, 0x84]);
        mkv.extend_from_slice(b"webm");
        mkv.extend_from_slice(&[
            0x18, 0x53, 0x80, 0x67, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE,
        ]);
        mkv.extend_from_slice(&[
            0x16, 0x54, 0xAE, 0x6B, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE,
        ]);
        assert_eq!(read_recording(&mkv).width, None);
        // Random bytes behind each format's magic number.
        for (seed, magic) in [
            &b"ID3\x04\0\0\0\0\0\x10"[..],
            b"OggS\0\x02",
            b"fLaC\0\0\0\x22",
            b"\0\0\0\x20ftypM4A ",
            b"\x1aE\xdf\xa3",
        ]
        .iter()
        .enumerate()
        {
            let mut bytes = magic.to_vec();
            bytes.extend(noise(seed as u64 + 100).take(4_096));
            let _ = read_recording(&bytes);
        }
    }

    #[test]
    fn only_recordings_are_handed_to_a_demuxer() {
        // A WAV declared nothing but found to be text is not read as one.
        assert_eq!(
            recording(RECORDINGS[0].1, "text/plain"),
            Recording::default()
        );
        assert_eq!(
            recording(RECORDINGS[0].1, "audio/x-wav").duration_ms,
            Some(1_250)
        );
        assert_eq!(
            inspect(b"hello".to_vec(), "thumbs/x")
                .arrived
                .metadata
                .duration_ms,
            None
        );
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
