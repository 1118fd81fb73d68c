#!/usr/bin/env python3
"""Helper for scripts/make-demo.sh.

Validates the per-rendition HLS media playlists that ffmpeg wrote, computes the
RFC 8216 bandwidth attributes from the real segment files and writes the master
playlist (and gateway/demo/README.md) itself.

  BANDWIDTH          = peak segment bit rate (RFC 8216 section 4.3.4.2):
                       max over segments of ceil(bytes * 8 / EXTINF duration)
  AVERAGE-BANDWIDTH  = ceil(total bytes * 8 / total EXTINF duration)

CODECS is derived from the SPS actually present in the first segment
(avc1.PPCCLL: profile_idc, constraint flags byte, level_idc) plus mp4a.40.2
(AAC-LC, checked with ffprobe).

Usage:
  demo_bandwidth.py DEMO_DIR FPS NAME:WIDTHxHEIGHT [NAME:WIDTHxHEIGHT ...]
"""

import json
import math
import os
import subprocess
import sys
from fractions import Fraction


def fail(msg):
    sys.stderr.write("demo_bandwidth.py: error: %s\n" % msg)
    sys.exit(1)


def parse_media_playlist(path):
    """Return (target_duration, [(uri, duration_str, Fraction)]) and check the tags."""
    with open(path, "r", encoding="utf-8") as f:
        lines = [l.strip() for l in f if l.strip()]
    if not lines or lines[0] != "#EXTM3U":
        fail("%s: does not start with #EXTM3U" % path)
    target = None
    segments = []
    pending = None
    seen = set()
    for line in lines[1:]:
        if line.startswith("#EXT-X-TARGETDURATION:"):
            target = int(line.split(":", 1)[1])
        elif line.startswith("#EXTINF:"):
            dur = line.split(":", 1)[1].split(",", 1)[0]
            pending = dur
        elif line.startswith("#"):
            seen.add(line.split(":", 1)[0])
            if line.startswith("#EXT-X-MEDIA-SEQUENCE:") and line != "#EXT-X-MEDIA-SEQUENCE:0":
                fail("%s: media sequence is not 0: %s" % (path, line))
            if line.startswith("#EXT-X-PLAYLIST-TYPE:") and line != "#EXT-X-PLAYLIST-TYPE:VOD":
                fail("%s: playlist type is not VOD: %s" % (path, line))
        else:
            if pending is None:
                fail("%s: URI %r without #EXTINF" % (path, line))
            if "/" in line or ":" in line:
                fail("%s: segment URI %r is not a plain relative name" % (path, line))
            segments.append((line, pending, Fraction(pending)))
            pending = None
    for tag in ("#EXT-X-VERSION", "#EXT-X-MEDIA-SEQUENCE", "#EXT-X-PLAYLIST-TYPE", "#EXT-X-ENDLIST"):
        if tag not in seen:
            fail("%s: missing %s" % (path, tag))
    if target is None:
        fail("%s: missing #EXT-X-TARGETDURATION" % path)
    if not segments:
        fail("%s: no segments" % path)
    # RFC 8216 4.3.3.1: EXTINF rounded to the nearest integer must be <= target duration.
    for uri, dstr, d in segments:
        if int(math.floor(d + Fraction(1, 2))) > target:
            fail("%s: %s EXTINF %s exceeds TARGETDURATION %d" % (path, uri, dstr, target))
    return target, segments


def ffprobe_json(args):
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-of", "json"] + args,
        check=True, stdout=subprocess.PIPE).stdout
    return json.loads(out)


def avc_codec_string(segment_path):
    """avc1.PPCCLL from the first SPS in the segment's H.264 elementary stream."""
    es = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", segment_path, "-map", "0:v:0", "-c:v", "copy",
         "-bsf:v", "h264_mp4toannexb", "-frames:v", "1", "-f", "h264", "-"],
        check=True, stdout=subprocess.PIPE).stdout
    i = 0
    while True:
        i = es.find(b"\x00\x00\x01", i)
        if i < 0 or i + 6 >= len(es):
            fail("%s: no SPS found" % segment_path)
        nal_type = es[i + 3] & 0x1F
        if nal_type == 7:
            profile, constraints, level = es[i + 4], es[i + 5], es[i + 6]
            return "avc1.%02x%02x%02x" % (profile, constraints, level)
        i += 3


def audio_codec_string(segment_path):
    info = ffprobe_json(["-select_streams", "a:0", "-show_entries",
                         "stream=codec_name,profile,channels", segment_path])
    streams = info.get("streams", [])
    if not streams:
        fail("%s: no audio stream" % segment_path)
    s = streams[0]
    if s.get("codec_name") != "aac" or s.get("profile") != "LC":
        fail("%s: audio is not AAC-LC: %r" % (segment_path, s))
    return "mp4a.40.2", s.get("channels")


def first_packet_is_keyframe(segment_path):
    info = ffprobe_json(["-select_streams", "v:0", "-read_intervals", "%+#1",
                         "-show_entries", "packet=flags", segment_path])
    pkts = info.get("packets", [])
    return bool(pkts) and "K" in pkts[0].get("flags", "")


def main():
    if len(sys.argv) < 4:
        fail("usage: demo_bandwidth.py DEMO_DIR FPS NAME:WxH [NAME:WxH ...]")
    demo_dir = sys.argv[1]
    fps = sys.argv[2]
    vod_dir = os.path.join(demo_dir, "vod")
    renditions = []
    for spec in sys.argv[3:]:
        name, res = spec.split(":", 1)
        playlist = os.path.join(vod_dir, name, "index.m3u8")
        target, segments = parse_media_playlist(playlist)
        total_bytes = 0
        total_dur = Fraction(0)
        peak = 0
        seg_rows = []
        for uri, dstr, d in segments:
            p = os.path.join(vod_dir, name, uri)
            size = os.path.getsize(p)
            if d <= 0:
                fail("%s: non-positive duration" % p)
            if not first_packet_is_keyframe(p):
                fail("%s: first video packet is not a keyframe" % p)
            rate = math.ceil(Fraction(size * 8) / d)
            peak = max(peak, rate)
            total_bytes += size
            total_dur += d
            seg_rows.append((uri, dstr, size, rate))
        avg = math.ceil(Fraction(total_bytes * 8) / total_dur)
        first_seg = os.path.join(vod_dir, name, segments[0][0])
        vcodec = avc_codec_string(first_seg)
        acodec, channels = audio_codec_string(first_seg)
        vinfo = ffprobe_json(["-select_streams", "v:0", "-show_entries",
                              "stream=width,height,profile,level", first_seg])["streams"][0]
        if "%dx%d" % (vinfo["width"], vinfo["height"]) != res:
            fail("%s: resolution %dx%d, expected %s" % (first_seg, vinfo["width"], vinfo["height"], res))
        renditions.append({
            "name": name, "res": res, "target": target, "segments": seg_rows,
            "total_bytes": total_bytes, "total_dur": total_dur,
            "peak": peak, "avg": avg, "codecs": "%s,%s" % (vcodec, acodec),
            "profile": vinfo.get("profile"), "level": vinfo.get("level"),
            "channels": channels,
        })

    renditions.sort(key=lambda r: r["peak"])

    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for r in renditions:
        lines.append(
            '#EXT-X-STREAM-INF:BANDWIDTH=%d,AVERAGE-BANDWIDTH=%d,CODECS="%s",RESOLUTION=%s,FRAME-RATE=%.3f'
            % (r["peak"], r["avg"], r["codecs"], r["res"], float(Fraction(fps))))
        lines.append("%s/index.m3u8" % r["name"])
    with open(os.path.join(vod_dir, "master.m3u8"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")

    readme = [
        "# Built-in demo HLS stream",
        "",
        "Generated by `scripts/make-demo.sh` (ffmpeg `testsrc2` test pattern with a",
        "progress bar, 440 Hz sine tone with a beep every second). **Do not edit by",
        "hand**: change the script and re-run it instead.",
        "",
        "`vod/master.m3u8` is a VOD ladder of %d renditions; each `vod/<name>/index.m3u8`"
        % len(renditions),
        "lists %d MPEG-TS segments (`seg_000.ts`...) of H.264 + AAC-LC mono audio."
        % len(renditions[0]["segments"]),
        "BANDWIDTH is the peak segment bit rate and AVERAGE-BANDWIDTH the mean bit",
        "rate, both computed from the segment files (RFC 8216 section 4.3.4.2).",
        "",
        "| rendition | resolution | CODECS | segments | duration (s) | bytes | BANDWIDTH | AVERAGE-BANDWIDTH |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in renditions:
        readme.append("| %s | %s | `%s` | %d | %s | %d | %d | %d |" % (
            r["name"], r["res"], r["codecs"], len(r["segments"]),
            "%.3f" % float(r["total_dur"]), r["total_bytes"], r["peak"], r["avg"]))
    vod_bytes = sum(os.path.getsize(os.path.join(d, f))
                    for d, _, files in os.walk(vod_dir) for f in files)
    readme.append("")
    readme.append("Total size of `vod/` (all playlists and segments): %d bytes." % vod_bytes)
    readme.append("")
    with open(os.path.join(demo_dir, "README.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(readme))

    for r in renditions:
        print("%s %s codecs=%s profile=%s level=%s channels=%s target=%d bytes=%d peak=%d avg=%d" % (
            r["name"], r["res"], r["codecs"], r["profile"], r["level"], r["channels"],
            r["target"], r["total_bytes"], r["peak"], r["avg"]))
        for uri, dstr, size, rate in r["segments"]:
            print("  %s EXTINF=%s bytes=%d bps=%d" % (uri, dstr, size, rate))


if __name__ == "__main__":
    main()
