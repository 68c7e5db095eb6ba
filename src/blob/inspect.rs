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

use image::metadata::Orientation;
use image::ImageDecoder as _;
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
/// Quality of a JPEG re-encoded to turn it upright: visually lossless for photos.
const JPEG_QUALITY: u8 = 90;

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
    let executable = kind.is_some_and(|kind| is_program(&kind)) || bytes.starts_with(b"#!");
    let format = sniffed_type.as_deref().and_then(raster_format);
    let mut metadata = Metadata::default();
    let mut undecodable = None;
    let mut thumbnail = None;
    let mut content = bytes;
    if let (Some(format), false) = (format, executable) {
        match decode(&content, format) {
            Ok(Decoded {
                mut image,
                orientation,
                icc_profile,
            }) => {
                // Dimensions and thumbnail as the image is meant to be seen: the
                // orientation goes with the metadata that carried it.
                image.apply_orientation(orientation);
                metadata.width = Some(image.width());
                metadata.height = Some(image.height());
                match make_thumbnail(&image) {
                    Ok(png) => {
                        thumbnail = Some(png);
                        metadata.thumbnail_key = Some(thumbnail_key.to_owned());
                    }
                    Err(error) => tracing::warn!(%error, "cannot make a thumbnail"),
                }
                match served_image(&content, format, &image, orientation, icc_profile) {
                    Ok(served) => content = served,
                    Err(reason) => undecodable = Some(reason),
                }
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

/// Whether `infer` found a program: its App group, less certificates, which it files
/// there too (any DER structure's first two bytes, or a PEM header).
fn is_program(kind: &infer::Type) -> bool {
    kind.matcher_type() == infer::MatcherType::App
        && kind.mime_type() != "application/x-x509-ca-cert"
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

/// Raster formats decoded for dimensions and thumbnails: those the `image` crate is
/// built to decode here. Only they may be served inline (`served_inline`).
fn raster_format(media_type: &str) -> Option<image::ImageFormat> {
    Some(match media_type {
        "image/png" => image::ImageFormat::Png,
        "image/jpeg" => image::ImageFormat::Jpeg,
        "image/webp" => image::ImageFormat::WebP,
        "image/gif" => image::ImageFormat::Gif,
        _ => return None,
    })
}

/// A decoded image, as stored (not yet turned upright), and what its metadata said
/// about showing it.
struct Decoded {
    image: image::DynamicImage,
    orientation: Orientation,
    icc_profile: Option<Vec<u8>>,
}

fn decode(bytes: &[u8], format: image::ImageFormat) -> Result<Decoded, String> {
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    // The header alone says how large the image is: refuse a bomb before decoding it.
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(limits.clone());
    let mut header = reader.into_decoder().map_err(describe)?;
    let (width, height) = header.dimensions();
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(format!(
            "{width}×{height} pixels is more than {MAX_PIXELS} pixels"
        ));
    }
    // Unreadable EXIF says nothing about orientation: the pixels are shown as stored,
    // as a browser would show them.
    let orientation = header.orientation().unwrap_or(Orientation::NoTransforms);
    let icc_profile = header.icc_profile().ok().flatten();
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(limits);
    let image = reader.decode().map_err(describe)?;
    Ok(Decoded {
        image,
        orientation,
        icc_profile,
    })
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

/// What to serve for an image: never anything that still carries its metadata; `Err`
/// says why nothing can be served.
///
/// Usually the file less its metadata, so the pixels stay exactly as sent. It is
/// re-encoded from `upright` instead, in its own format since it is served under the
/// declared type, when it is not upright as stored (the orientation is lost with the
/// EXIF that carries it) and when its structure cannot be followed. Re-encoding keeps
/// only an animation's first frame, so an animation (or a GIF) that cannot be followed
/// is refused and one with an orientation is stripped and served unturned.
fn served_image(
    bytes: &[u8],
    format: image::ImageFormat,
    upright: &image::DynamicImage,
    orientation: Orientation,
    icc_profile: Option<Vec<u8>>,
) -> Result<Vec<u8>, String> {
    let animated = is_animated(bytes, format);
    let re_encode = || {
        encode(upright, format, icc_profile.clone())
            .map_err(|error| format!("it cannot be re-encoded without its metadata: {error}"))
    };
    if orientation != Orientation::NoTransforms && !animated {
        return re_encode();
    }
    match strip_metadata(bytes, format) {
        Some(stripped) => Ok(stripped),
        // `image` cannot write GIF frames back as they came.
        None if animated || format == image::ImageFormat::Gif => {
            Err("its structure cannot be followed to remove its metadata".to_owned())
        }
        None => re_encode(),
    }
}

/// `image` encoded as `format` with nothing but its pixels and, when it describes
/// the pixels as encoded, its colour profile.
fn encode(
    image: &image::DynamicImage,
    format: image::ImageFormat,
    icc_profile: Option<Vec<u8>>,
) -> Result<Vec<u8>, image::ImageError> {
    use image::ImageEncoder as _;

    // A profile converts colours of one space (bytes 16–19 of its header). A CMYK
    // JPEG is decoded to RGB, so its CMYK profile would now mislead.
    let space: &[u8] = if image.color().has_color() {
        b"RGB "
    } else {
        b"GRAY"
    };
    let icc_profile = icc_profile.filter(|profile| profile.get(16..20) == Some(space));
    let mut out = Vec::new();
    match format {
        image::ImageFormat::Jpeg => {
            let mut encoder =
                image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY);
            if let Some(profile) = icc_profile {
                // Without it the colours are only slightly off; not worth refusing.
                let _ = encoder.set_icc_profile(profile);
            }
            image.write_with_encoder(encoder)?;
        }
        image::ImageFormat::Png => {
            let mut encoder = image::codecs::png::PngEncoder::new(&mut out);
            if let Some(profile) = icc_profile {
                let _ = encoder.set_icc_profile(profile);
            }
            image.write_with_encoder(encoder)?;
        }
        image::ImageFormat::WebP => {
            // Lossless: the only WebP encoder `image` has.
            let mut encoder = image::codecs::webp::WebPEncoder::new_lossless(&mut out);
            if let Some(profile) = icc_profile {
                let _ = encoder.set_icc_profile(profile);
            }
            image.write_with_encoder(encoder)?;
        }
        other => {
            return Err(image::ImageError::Unsupported(
                image::error::UnsupportedError::from_format_and_kind(
                    other.into(),
                    image::error::UnsupportedErrorKind::Format(other.into()),
                ),
            ))
        }
    }
    Ok(out)
}

/// Whether the file is an animation: an animated WebP (the VP8X animation flag) or
/// PNG (an `acTL` chunk before the image data).
fn is_animated(bytes: &[u8], format: image::ImageFormat) -> bool {
    match format {
        image::ImageFormat::WebP => {
            bytes.get(12..16) == Some(b"VP8X") && bytes.get(20).is_some_and(|f| f & 0x02 != 0)
        }
        image::ImageFormat::Png => png_chunks(bytes)
            .map_while(|chunk| chunk)
            .map(|chunk| chunk.get(4..8).unwrap_or_default())
            .take_while(|kind| *kind != b"IDAT")
            .any(|kind| kind == b"acTL"),
        _ => false,
    }
}

/// The image without its metadata (EXIF with GPS, XMP, IPTC, text chunks, comments,
/// and anything after the image's end), by keeping only what decoding and colour need
/// rather than re-encoding: the pixels stay exactly as sent, and a file that carries
/// no metadata is served byte for byte. `None` when the structure cannot be followed:
/// then nothing of the file is safe to serve as it is.
fn strip_metadata(bytes: &[u8], format: image::ImageFormat) -> Option<Vec<u8>> {
    match format {
        image::ImageFormat::Png => strip_png(bytes),
        image::ImageFormat::Jpeg => strip_jpeg(bytes),
        image::ImageFormat::WebP => strip_webp(bytes),
        image::ImageFormat::Gif => strip_gif(bytes),
        _ => None,
    }
}

/// GIF application extensions that playback or colour need: the loop count
/// (Netscape's, and the older AnimExts) and the colour profile.
const GIF_IMAGE_APPLICATIONS: [&[u8; 11]; 3] = [b"NETSCAPE2.0", b"ANIMEXTS1.0", b"ICCRGBG1012"];

/// A GIF block's data sub-blocks from `at` through their zero-length terminator: where
/// they end, or `None` if the file ends first.
fn gif_sub_blocks_end(bytes: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let size = usize::from(*bytes.get(at)?);
        at = at.checked_add(1 + size)?;
        if size == 0 {
            return Some(at);
        }
    }
}

/// A GIF colour table's length, from a descriptor's packed flags.
fn gif_colour_table(flags: u8) -> usize {
    if flags & 0x80 == 0 {
        0
    } else {
        3 << ((flags & 0x07) + 1)
    }
}

/// Through the trailer and no further, keeping the frames, their graphic controls,
/// the loop count and the colour profile; comments, XMP and every other application
/// extension go. Plain-text extensions go too (browsers never draw them, so they
/// would be text no one sees), with the graphic control that was meant for them.
/// A file that simply stops after a whole block gets its trailer back.
fn strip_gif(bytes: &[u8]) -> Option<Vec<u8>> {
    let header = bytes.get(..13)?;
    if !(header.starts_with(b"GIF87a") || header.starts_with(b"GIF89a")) {
        return None;
    }
    let mut at = 13usize.checked_add(gif_colour_table(header[10]))?;
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(bytes.get(..at)?);
    // Where the graphic control that applies to the next frame starts in `out`.
    let mut control: Option<usize> = None;
    loop {
        let Some(&introducer) = bytes.get(at) else {
            out.push(0x3B);
            return Some(out);
        };
        match introducer {
            0x3B => {
                out.push(0x3B);
                return Some(out);
            }
            0x2C => {
                let flags = *bytes.get(at + 9)?;
                // Descriptor, local colour table, LZW code size, then the data.
                let data = at.checked_add(10 + gif_colour_table(flags) + 1)?;
                let end = gif_sub_blocks_end(bytes, data)?;
                out.extend_from_slice(bytes.get(at..end)?);
                control = None;
                at = end;
            }
            0x21 => {
                let label = *bytes.get(at + 1)?;
                let end = gif_sub_blocks_end(bytes, at + 2)?;
                let block = bytes.get(at..end)?;
                match label {
                    0xF9 => {
                        control = Some(out.len());
                        out.extend_from_slice(block);
                    }
                    0xFF if block.get(2) == Some(&11)
                        && block.get(3..14).is_some_and(|id| {
                            GIF_IMAGE_APPLICATIONS.iter().any(|k| &k[..] == id)
                        }) =>
                    {
                        out.extend_from_slice(block);
                    }
                    0x01 => {
                        if let Some(start) = control.take() {
                            out.truncate(start);
                        }
                    }
                    _ => {}
                }
                at = end;
            }
            _ => return None,
        }
    }
}

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// A PNG's chunks after the signature (length, type, data and CRC each) through
/// `IEND`; `None` for one that runs past the end of the file, and nothing after it.
fn png_chunks(bytes: &[u8]) -> impl Iterator<Item = Option<&[u8]>> {
    let mut at = Some(PNG_SIGNATURE.len());
    std::iter::from_fn(move || {
        let start = at?;
        let chunk = png_chunk_at(bytes, start);
        at = chunk
            .filter(|chunk| chunk.get(4..8) != Some(b"IEND"))
            .map(|chunk| start + chunk.len());
        Some(chunk)
    })
}

fn png_chunk_at(bytes: &[u8], start: usize) -> Option<&[u8]> {
    let length = u32::from_be_bytes(bytes.get(start..start.checked_add(4)?)?.try_into().ok()?);
    let end = start
        .checked_add(12)?
        .checked_add(usize::try_from(length).ok()?)?;
    bytes.get(start..end)
}

/// PNG chunks that decoding, colour, transparency, pixel size or animation need; all
/// others (`eXIf`, `tEXt`, `zTXt`, `iTXt` with XMP, `tIME`, private chunks such as C2PA
/// manifests) are dropped.
fn is_png_image_chunk(kind: &[u8]) -> bool {
    matches!(
        kind,
        b"IHDR"
            | b"PLTE"
            | b"IDAT"
            | b"IEND"
            | b"tRNS"
            | b"cHRM"
            | b"gAMA"
            | b"iCCP"
            | b"sBIT"
            | b"sRGB"
            | b"cICP"
            | b"mDCV"
            | b"cLLI"
            | b"bKGD"
            | b"hIST"
            | b"pHYs"
            | b"sPLT"
            | b"acTL"
            | b"fcTL"
            | b"fdAT"
    )
}

/// Through `IEND` and no further: whatever follows it is no part of the image.
fn strip_png(bytes: &[u8]) -> Option<Vec<u8>> {
    if !bytes.starts_with(PNG_SIGNATURE) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(PNG_SIGNATURE);
    for chunk in png_chunks(bytes) {
        let chunk = chunk?;
        let kind = chunk.get(4..8)?;
        if is_png_image_chunk(kind) {
            out.extend_from_slice(chunk);
        }
        if kind == b"IEND" {
            return Some(out);
        }
    }
    None
}

/// Through the first image's EOI and no further: phones append more after it (MPF
/// pictures with their own EXIF, HDR gain maps, Motion Photo video with location).
/// Of the segments before and between scans, only those that decoding or colour need
/// are kept.
fn strip_jpeg(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(bytes.get(..2).filter(|soi| *soi == [0xFF, 0xD8])?);
    let mut at = 2;
    loop {
        if *bytes.get(at)? != 0xFF {
            return None;
        }
        // Any number of 0xFF fill bytes may precede a marker (T.81, B.1.1.2).
        while *bytes.get(at + 1)? == 0xFF {
            at += 1;
        }
        let marker = *bytes.get(at + 1)?;
        match marker {
            0xD9 => {
                out.extend_from_slice(&[0xFF, 0xD9]);
                return Some(out);
            }
            // Markers without a length (another SOI, RSTn, TEM) or a stuffed zero have
            // no place between segments.
            0x00 | 0x01 | 0xD0..=0xD8 => return None,
            _ => {}
        }
        let length = usize::from(u16::from_be_bytes([
            *bytes.get(at + 2)?,
            *bytes.get(at + 3)?,
        ]));
        if length < 2 {
            return None;
        }
        let end = at.checked_add(2)?.checked_add(length)?;
        let segment = bytes.get(at..end)?;
        let payload = segment.get(4..)?;
        match marker {
            // JFIF says how to read the colours; any thumbnail it carries is not kept.
            0xE0 if payload.starts_with(b"JFIF\0") && payload.len() >= 14 => {
                out.extend_from_slice(&[0xFF, 0xE0, 0x00, 0x10]);
                out.extend_from_slice(payload.get(..12)?);
                out.extend_from_slice(&[0, 0]);
            }
            // The colour profile, and Adobe's colour transform (YCCK, CMYK).
            0xE2 if payload.starts_with(b"ICC_PROFILE\0") => out.extend_from_slice(segment),
            0xEE if payload.starts_with(b"Adobe") => out.extend_from_slice(segment),
            // Frames, Huffman and arithmetic tables, quantisation tables, scans, restart
            // intervals, line counts, hierarchical progression.
            0xC0..=0xCF | 0xDA..=0xDF => out.extend_from_slice(segment),
            // Every other APPn (EXIF, XMP, MPF, IPTC, Photoshop ...), COM and JPGn.
            _ => {}
        }
        at = end;
        if marker == 0xDA {
            let data_end = entropy_coded_end(bytes, at)?;
            out.extend_from_slice(bytes.get(at..data_end)?);
            at = data_end;
        }
    }
}

/// Where a scan's entropy-coded data, starting at `from`, ends: at the first marker
/// that is neither a stuffed data byte (0xFF 0x00) nor a restart marker (RST0–RST7),
/// counting any fill bytes before it as the marker's. `None` if the file ends first.
fn entropy_coded_end(bytes: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    loop {
        let found = at + bytes.get(at..)?.iter().position(|byte| *byte == 0xFF)?;
        let mut next = found + 1;
        while *bytes.get(next)? == 0xFF {
            next += 1;
        }
        match bytes.get(next)? {
            0x00 | 0xD0..=0xD7 => at = next + 1,
            _ => return Some(found),
        }
    }
}

/// WebP chunks that decoding, colour or animation need; `EXIF`, `XMP ` and unknown
/// chunks are dropped.
fn is_webp_image_chunk(kind: &[u8]) -> bool {
    matches!(
        kind,
        b"VP8 " | b"VP8L" | b"VP8X" | b"ALPH" | b"ANIM" | b"ANMF" | b"ICCP"
    )
}

/// Within the RIFF chunk and no further: what follows it is no part of the image.
fn strip_webp(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.get(..4)? != b"RIFF" || bytes.get(8..12)? != b"WEBP" {
        return None;
    }
    let riff_length =
        usize::try_from(u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?)).ok()?;
    let riff = bytes.get(..riff_length.checked_add(8)?.min(bytes.len()))?;
    let mut body = Vec::with_capacity(riff.len());
    body.extend_from_slice(b"WEBP");
    let mut at = 12;
    while at < riff.len() {
        let kind = riff.get(at..at + 4)?;
        let length = usize::try_from(u32::from_le_bytes(
            riff.get(at + 4..at + 8)?.try_into().ok()?,
        ))
        .ok()?;
        let end = at.checked_add(8)?.checked_add(length)?;
        let chunk = riff.get(at..end)?;
        if is_webp_image_chunk(kind) {
            let flags = body.len() + 8;
            body.extend_from_slice(chunk);
            if kind == b"VP8X" {
                // The file no longer announces EXIF (bit 3) or XMP (bit 2).
                if let Some(flags) = body.get_mut(flags) {
                    *flags &= !0b0000_1100;
                }
            }
            // Chunks are padded to an even length; a writer may leave the last pad out.
            if length % 2 == 1 {
                body.push(0);
            }
        }
        at = end + length % 2;
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

    /// What a phone's EXIF would give away; no served file may contain it.
    const SECRET: &[u8] = b"GPSLatitude=48.8584N;GPSLongitude=2.2945E";

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack
            .windows(needle.len())
            .any(|window| window == needle)
    }

    /// A pattern with a distinct colour per pixel, so a turn shows.
    fn pattern(width: u32, height: u32) -> image::RgbImage {
        image::RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([(x * 40 % 256) as u8, (y * 60 % 256) as u8, 7])
        })
    }

    fn encoded(image: &image::RgbImage, format: image::ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        image.write_to(&mut out, format).expect("encode");
        out.into_inner()
    }

    fn jpeg(width: u32, height: u32) -> Vec<u8> {
        encoded(&pattern(width, height), image::ImageFormat::Jpeg)
    }

    /// A big-endian TIFF structure as EXIF carries it: one IFD with the orientation,
    /// and [`SECRET`] after it, where a GPS IFD would be.
    fn tiff(orientation: u16) -> Vec<u8> {
        let mut tiff = b"MM\0\x2a\0\0\0\x08".to_vec();
        tiff.extend_from_slice(&1u16.to_be_bytes());
        tiff.extend_from_slice(&0x0112u16.to_be_bytes());
        tiff.extend_from_slice(&3u16.to_be_bytes());
        tiff.extend_from_slice(&1u32.to_be_bytes());
        tiff.extend_from_slice(&orientation.to_be_bytes());
        tiff.extend_from_slice(&[0, 0]);
        tiff.extend_from_slice(&0u32.to_be_bytes());
        tiff.extend_from_slice(SECRET);
        tiff
    }

    fn jpeg_segment(marker: u8, payload: &[u8]) -> Vec<u8> {
        let mut segment = vec![0xFF, marker];
        segment.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
        segment.extend_from_slice(payload);
        segment
    }

    fn exif_segment(orientation: u16) -> Vec<u8> {
        let mut payload = b"Exif\0\0".to_vec();
        payload.extend_from_slice(&tiff(orientation));
        jpeg_segment(0xE1, &payload)
    }

    /// `jpeg` with `segments` right after its SOI.
    fn jpeg_with(jpeg: &[u8], segments: &[Vec<u8>]) -> Vec<u8> {
        let mut out = jpeg[..2].to_vec();
        for segment in segments {
            out.extend_from_slice(segment);
        }
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    /// `clean` with a chunk inserted after its header chunk.
    fn png_with_chunk(clean: &[u8], kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let ihdr_end = 8 + 12 + 13;
        let mut typed = kind.to_vec();
        typed.extend_from_slice(data);
        let mut out = clean[..ihdr_end].to_vec();
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(&typed);
        out.extend_from_slice(&crc32(&typed).to_be_bytes());
        out.extend_from_slice(&clean[ihdr_end..]);
        out
    }

    /// A WebP file of `chunks`, each padded to an even length.
    fn riff(chunks: &[(&[u8; 4], &[u8])]) -> Vec<u8> {
        let mut body = b"WEBP".to_vec();
        for (kind, data) in chunks {
            body.extend_from_slice(*kind);
            body.extend_from_slice(&(data.len() as u32).to_le_bytes());
            body.extend_from_slice(data);
            if data.len() % 2 == 1 {
                body.push(0);
            }
        }
        let mut out = b"RIFF".to_vec();
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// An extended WebP (VP8X with `flags`) of `image`'s lossless bitstream, followed by
    /// `extra` chunks.
    fn extended_webp(image: &image::RgbImage, flags: u8, extra: &[(&[u8; 4], &[u8])]) -> Vec<u8> {
        let simple = encoded(image, image::ImageFormat::WebP);
        assert_eq!(&simple[12..16], b"VP8L");
        let vp8l = &simple[20..];
        let mut vp8x = vec![flags, 0, 0, 0];
        vp8x.extend_from_slice(&(image.width() - 1).to_le_bytes()[..3]);
        vp8x.extend_from_slice(&(image.height() - 1).to_le_bytes()[..3]);
        let mut chunks: Vec<(&[u8; 4], &[u8])> = vec![(b"VP8X", &vp8x), (b"VP8L", vp8l)];
        chunks.extend_from_slice(extra);
        riff(&chunks)
    }

    /// The served content decodes as `format` to `width` × `height`, is what the
    /// metadata reports, and carries no [`SECRET`].
    fn assert_served(
        inspected: &Inspected,
        format: image::ImageFormat,
        (width, height): (u32, u32),
    ) -> image::DynamicImage {
        let arrived = &inspected.arrived;
        assert_eq!(arrived.undecodable, None);
        assert!(!contains(&inspected.content, SECRET), "metadata kept");
        assert_eq!(image::guess_format(&inspected.content).ok(), Some(format));
        let served = image::load_from_memory_with_format(&inspected.content, format)
            .expect("the served content decodes");
        assert_eq!((served.width(), served.height()), (width, height));
        assert_eq!(
            (arrived.metadata.width, arrived.metadata.height),
            (Some(width), Some(height))
        );
        let thumbnail = image::load_from_memory(inspected.thumbnail.as_deref().expect("thumb"))
            .expect("thumbnail decodes");
        assert_eq!((thumbnail.width(), thumbnail.height()), (width, height));
        served
    }

    #[test]
    fn jpeg_data_after_the_end_of_the_image_is_cut() {
        let clean = jpeg(16, 8);
        // As phones append it: a second picture (MPF) with its own EXIF, then a video.
        let mut appended = clean.clone();
        appended.extend_from_slice(&jpeg_with(&jpeg(4, 4), &[exif_segment(1)]));
        appended.extend_from_slice(b"\0\0\0\x18ftypmp42");
        appended.extend_from_slice(SECRET);
        let inspected = inspect(appended, "thumbs/x");
        assert_served(&inspected, image::ImageFormat::Jpeg, (16, 8));
        assert_eq!(inspected.content, clean);
    }

    #[test]
    fn jpeg_segments_other_than_jfif_icc_and_adobe_are_dropped() {
        let clean = jpeg(16, 8);
        let mut icc = b"ICC_PROFILE\0\x01\x01".to_vec();
        let mut profile = vec![0; 128];
        profile[16..20].copy_from_slice(b"RGB ");
        icc.extend_from_slice(&profile);
        let icc = jpeg_segment(0xE2, &icc);
        let mut mpf = b"MPF\0".to_vec();
        mpf.extend_from_slice(SECRET);
        let mut xmp = b"http://ns.adobe.com/xap/1.0/\0".to_vec();
        xmp.extend_from_slice(SECRET);
        let mut dropped = vec![
            exif_segment(1),
            jpeg_segment(0xE1, &xmp),
            jpeg_segment(0xE2, &mpf),
            jpeg_segment(0xFE, SECRET),
        ];
        // APP0 other than JFIF (JFXX, AVI1), APP3 to APP13 (IPTC in APP13), APP15.
        for marker in [0xE0, 0xE3, 0xE4, 0xE9, 0xEC, 0xED, 0xEF] {
            dropped.push(jpeg_segment(marker, SECRET));
        }
        let mut segments = dropped.clone();
        segments.push(icc.clone());
        let inspected = inspect(jpeg_with(&clean, &segments), "thumbs/x");
        assert_served(&inspected, image::ImageFormat::Jpeg, (16, 8));
        // The colour profile stays.
        assert_eq!(inspected.content, jpeg_with(&clean, &[icc]));
    }

    #[test]
    fn a_jfif_thumbnail_is_not_kept() {
        let clean = jpeg(8, 8);
        assert_eq!(&clean[2..6], &[0xFF, 0xE0, 0x00, 0x10]);
        // The same JFIF segment announcing a 1 × 1 thumbnail of 3 bytes.
        let mut jfif = clean[6..18].to_vec();
        jfif.extend_from_slice(&[1, 1, 0xAB, 0xCD, 0xEF]);
        let mut with_thumbnail = clean[..2].to_vec();
        with_thumbnail.extend_from_slice(&jpeg_segment(0xE0, &jfif));
        with_thumbnail.extend_from_slice(&clean[20..]);
        assert_eq!(strip_jpeg(&with_thumbnail), Some(clean));
    }

    #[test]
    fn jpeg_fill_bytes_before_markers_are_accepted() {
        let clean = jpeg(16, 8);
        // Fill bytes before the first table, and before the EOI.
        let mut filled = clean[..20].to_vec();
        filled.extend_from_slice(&[0xFF, 0xFF, 0xFF]);
        filled.extend_from_slice(&clean[20..clean.len() - 2]);
        filled.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xD9]);
        let with_exif = jpeg_with(&filled, &[exif_segment(1)]);
        let inspected = inspect(with_exif, "thumbs/x");
        assert_served(&inspected, image::ImageFormat::Jpeg, (16, 8));
        assert_eq!(inspected.content, clean);
    }

    /// A progressive file's layout: tables and other segments between its scans, and
    /// scan data with stuffed bytes, restart markers and fill bytes.
    #[test]
    fn every_scan_of_a_jpeg_is_followed_to_its_end() {
        let sof2 = jpeg_segment(0xC2, &[8, 0, 8, 0, 8, 1, 1, 0x11, 0]);
        let dht = jpeg_segment(0xC4, &[0; 17]);
        let sos = jpeg_segment(0xDA, &[1, 1, 0, 0, 63, 0]);
        let scan1 = [
            0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56, 0xFF, 0xFF, 0x00, 0x78,
        ];
        let scan2 = [0x9A, 0xFF, 0x00, 0xFF, 0xD7, 0xBC];
        let mut file = vec![0xFF, 0xD8];
        let mut expected = file.clone();
        file.extend_from_slice(&exif_segment(1));
        for part in [&sof2, &dht, &sos, &scan1[..]] {
            file.extend_from_slice(part);
            expected.extend_from_slice(part);
        }
        file.extend_from_slice(&[0xFF, 0xFF]);
        file.extend_from_slice(&jpeg_segment(0xE1, SECRET));
        file.extend_from_slice(&jpeg_segment(0xFE, SECRET));
        for part in [&dht, &sos, &scan2[..], &[0xFF, 0xD9][..]] {
            file.extend_from_slice(part);
            expected.extend_from_slice(part);
        }
        let end = file.len();
        file.extend_from_slice(&jpeg_with(&jpeg(4, 4), &[exif_segment(1)]));
        assert_eq!(strip_jpeg(&file), Some(expected));
        // Cut short in its last scan, or with anything but a marker between segments,
        // it cannot be followed.
        assert_eq!(strip_jpeg(&file[..end - 2]), None);
        assert_eq!(strip_jpeg(&file[..end - 4]), None);
        let mut stray = file.clone();
        stray.insert(2, 0x00);
        assert_eq!(strip_jpeg(&stray), None);
        for byte in 0..file.len() {
            let _ = strip_jpeg(&file[..byte]);
        }
    }

    #[test]
    fn a_jpeg_that_decodes_but_cannot_be_followed_is_re_encoded_without_metadata() {
        let clean = jpeg(16, 8);
        // A stray byte between two segments, which decoders skip over.
        let mut stray = jpeg_with(&clean, &[exif_segment(1)]);
        let after_exif = 2 + exif_segment(1).len();
        stray.insert(after_exif, 0x00);
        assert!(image::load_from_memory(&stray).is_ok());
        assert_eq!(strip_jpeg(&stray), None);
        let inspected = inspect(stray, "thumbs/x");
        assert_served(&inspected, image::ImageFormat::Jpeg, (16, 8));
        assert_ne!(inspected.content, clean);
        // Cut off before its end: decoders show what there is.
        let mut truncated = jpeg_with(&jpeg(16, 8), &[exif_segment(1)]);
        truncated.truncate(truncated.len() - 2);
        let inspected = inspect(truncated, "thumbs/x");
        assert_served(&inspected, image::ImageFormat::Jpeg, (16, 8));
    }

    /// A GIF of `frames` 6 × 4 frames, looping forever when there is more than one.
    fn gif(frames: u8) -> Vec<u8> {
        use image::codecs::gif::{GifEncoder, Repeat};
        let mut out = Vec::new();
        {
            let mut encoder = GifEncoder::new(&mut out);
            if frames > 1 {
                encoder.set_repeat(Repeat::Infinite).expect("repeat");
            }
            let frames = (0..frames).map(|i| {
                image::Frame::new(image::RgbaImage::from_fn(6, 4, |x, y| {
                    image::Rgba([(x * 40) as u8, (y * 60) as u8, i * 100, 255])
                }))
            });
            encoder.encode_frames(frames).expect("encode");
        }
        out
    }

    /// An extension block: `head` as its first sub-block when given, then `data`.
    fn gif_extension(label: u8, head: Option<&[u8]>, data: &[u8]) -> Vec<u8> {
        let mut block = vec![0x21, label];
        for sub in head.into_iter().chain(data.chunks(255)) {
            block.push(sub.len() as u8);
            block.extend_from_slice(sub);
        }
        block.push(0);
        block
    }

    /// `clean` with `blocks` inserted before its first block and `after` past its end.
    fn gif_with(clean: &[u8], blocks: &[Vec<u8>], after: &[u8]) -> Vec<u8> {
        let first = 13 + gif_colour_table(clean[10]);
        let mut out = clean[..first].to_vec();
        for block in blocks {
            out.extend_from_slice(block);
        }
        out.extend_from_slice(&clean[first..]);
        out.extend_from_slice(after);
        out
    }

    #[test]
    fn gif_comments_and_xmp_are_dropped_with_frames_and_loop_kept() {
        let clean = gif(2);
        assert_eq!(strip_gif(&clean).as_ref(), Some(&clean), "clean kept as is");
        let long_secret = SECRET.repeat(10);
        let file = gif_with(
            &clean,
            &[
                gif_extension(0xFE, None, SECRET),
                gif_extension(0xFF, Some(b"XMP DataXMP"), &long_secret),
                gif_extension(0xFF, Some(b"ICCRGBG1012"), b"a colour profile"),
            ],
            SECRET,
        );
        let inspected = inspect(file, "thumbs/x");
        assert_served(&inspected, image::ImageFormat::Gif, (6, 4));
        let decoder =
            image::codecs::gif::GifDecoder::new(Cursor::new(&inspected.content)).expect("decoder");
        use image::AnimationDecoder as _;
        assert_eq!(decoder.into_frames().count(), 2);
        assert!(
            contains(&inspected.content, b"NETSCAPE2.0"),
            "loop count lost"
        );
        assert!(
            contains(&inspected.content, b"a colour profile"),
            "profile lost"
        );
        let expected = gif_with(
            &clean,
            &[gif_extension(
                0xFF,
                Some(b"ICCRGBG1012"),
                b"a colour profile",
            )],
            b"",
        );
        assert_eq!(inspected.content, expected);
    }

    #[test]
    fn gif_plain_text_goes_with_its_graphic_control() {
        let clean = gif(1);
        let control = vec![0x21, 0xF9, 4, 0, 10, 0, 0, 0];
        let text = gif_extension(0x01, Some(&[0; 12]), SECRET);
        let file = gif_with(&clean, &[control, text], b"");
        assert_eq!(strip_gif(&file), Some(clean));
    }

    #[test]
    fn a_gif_that_cannot_be_followed_is_refused() {
        let clean = gif(2);
        // Cut inside the second frame's data: it still decodes, but not as sent.
        let cut = &clean[..clean.len() - 6];
        assert_eq!(strip_gif(cut), None);
        let stored = pattern(6, 4);
        let image = image::DynamicImage::ImageRgb8(stored);
        let served = served_image(
            cut,
            image::ImageFormat::Gif,
            &image,
            Orientation::NoTransforms,
            None,
        );
        assert!(served.is_err());
        // Stopping after a whole block is not cut short: the trailer is put back.
        assert_eq!(strip_gif(&clean[..clean.len() - 1]), Some(clean.clone()));
        for byte in 0..clean.len() {
            let _ = strip_gif(&clean[..byte]);
        }
    }

    #[test]
    fn an_animation_that_cannot_be_followed_is_refused() {
        let stored = pattern(4, 4);
        let image = image::DynamicImage::ImageRgb8(stored.clone());
        // Animated by its flags, with a chunk that runs past the end of the file.
        let mut animated = extended_webp(&stored, 0x02, &[]);
        animated.extend_from_slice(b"ANMF\xff\xff\0\0");
        let declared = u32::try_from(animated.len() - 8).unwrap_or(0);
        animated[4..8].copy_from_slice(&declared.to_le_bytes());
        let served = served_image(
            &animated,
            image::ImageFormat::WebP,
            &image,
            Orientation::NoTransforms,
            None,
        );
        assert!(served.is_err());
    }

    #[test]
    fn png_exif_and_text_chunks_are_dropped() {
        let clean = png(4, 4);
        let mut xmp = b"XML:com.adobe.xmp\0\0\0\0\0".to_vec();
        xmp.extend_from_slice(SECRET);
        let mut ztxt = b"Comment\0\0".to_vec();
        ztxt.extend_from_slice(SECRET);
        let mut text = b"Location\0".to_vec();
        text.extend_from_slice(SECRET);
        let mut with_all = clean.clone();
        for (kind, data) in [
            (b"eXIf", tiff(1)),
            (b"iTXt", xmp),
            (b"zTXt", ztxt),
            (b"tEXt", text),
            (b"caBX", SECRET.to_vec()),
            (b"tIME", vec![7, 234, 3, 1, 9, 0, 0]),
        ] {
            with_all = png_with_chunk(&with_all, kind, &data);
        }
        // After the end, too.
        with_all.extend_from_slice(SECRET);
        let inspected = inspect(with_all, "thumbs/x");
        assert_served(&inspected, image::ImageFormat::Png, (4, 4));
        assert_eq!(inspected.content, clean);
        // Rendering chunks stay.
        let with_gamma = png_with_chunk(&clean, b"gAMA", &45_455u32.to_be_bytes());
        assert_eq!(strip_png(&with_gamma).as_ref(), Some(&with_gamma));
        // No IEND: not followed.
        assert_eq!(strip_png(&clean[..clean.len() - 12]), None);
    }

    #[test]
    fn webp_exif_and_xmp_chunks_are_dropped_and_no_longer_announced() {
        let stored = pattern(6, 4);
        let mut xmp = b"<x:xmpmeta>".to_vec();
        xmp.extend_from_slice(SECRET);
        let tiff = tiff(1);
        let with_metadata = extended_webp(
            &stored,
            0x08 | 0x04,
            &[(b"EXIF", &tiff), (b"XMP ", &xmp), (b"UNKN", SECRET)],
        );
        let mut with_trailer = with_metadata.clone();
        with_trailer.extend_from_slice(SECRET);
        let inspected = inspect(with_trailer, "thumbs/x");
        let served = assert_served(&inspected, image::ImageFormat::WebP, (6, 4));
        assert_eq!(served.to_rgb8(), stored);
        assert_eq!(inspected.content, extended_webp(&stored, 0, &[]));
        assert_eq!(inspected.content[20], 0, "VP8X flags");
    }

    #[test]
    fn an_image_stored_sideways_is_served_upright_in_its_own_format() {
        // Orientation 6: the stored image is turned 90° clockwise to be seen, so its
        // stored top-left pixel shows at the top right.
        let stored = pattern(64, 48);
        let top_left = *stored.get_pixel(0, 0);
        let exif = tiff(6);

        let sideways_png =
            png_with_chunk(&encoded(&stored, image::ImageFormat::Png), b"eXIf", &exif);
        let inspected = inspect(sideways_png, "thumbs/x");
        let served = assert_served(&inspected, image::ImageFormat::Png, (48, 64)).to_rgb8();
        assert_eq!(*served.get_pixel(47, 0), top_left);
        assert_eq!(served, image::imageops::rotate90(&stored));

        let sideways_webp = extended_webp(&stored, 0x08, &[(b"EXIF", &exif)]);
        let inspected = inspect(sideways_webp, "thumbs/x");
        let served = assert_served(&inspected, image::ImageFormat::WebP, (48, 64)).to_rgb8();
        assert_eq!(served, image::imageops::rotate90(&stored));

        let sideways_jpeg = jpeg_with(&jpeg(64, 48), &[exif_segment(6)]);
        let inspected = inspect(sideways_jpeg, "thumbs/x");
        assert_served(&inspected, image::ImageFormat::Jpeg, (48, 64));
        assert_eq!(
            inspected.arrived.sniffed_type.as_deref(),
            Some("image/jpeg")
        );

        // Upright already: only stripped, byte for byte the rest.
        let upright = jpeg_with(&jpeg(64, 48), &[exif_segment(1)]);
        let inspected = inspect(upright, "thumbs/x");
        assert_served(&inspected, image::ImageFormat::Jpeg, (64, 48));
        assert_eq!(inspected.content, jpeg(64, 48));
    }

    #[test]
    fn certificates_are_not_programs() {
        let pem = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".to_vec();
        let der = [0x30, 0x82, 0x01, 0x0A, 0x02, 0x82, 0x01, 0x01, 0x00].to_vec();
        for certificate in [pem, der] {
            let inspected = inspect(certificate, "thumbs/x");
            assert_eq!(
                inspected.arrived.sniffed_type.as_deref(),
                Some("application/x-x509-ca-cert")
            );
            assert!(!inspected.arrived.executable);
        }
    }

    #[test]
    fn only_formats_decoded_here_are_served_inline() {
        for served_as_download in ["image/avif", "image/bmp"] {
            assert!(!crate::blob::served_inline(served_as_download));
            assert_eq!(raster_format(served_as_download), None);
        }
        for decoded in ["image/png", "image/jpeg", "image/webp", "image/gif"] {
            assert!(crate::blob::served_inline(decoded));
            assert!(raster_format(decoded).is_some());
        }
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
