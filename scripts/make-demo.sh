#!/usr/bin/env bash
# Regenerates the built-in demo HLS stream in gateway/demo/ (idempotent: the
# directory is wiped and rebuilt from scratch).
#
# Output: a 20 s VOD ladder (240p/360p/480p, H.264 + AAC-LC mono, 24 fps,
# 2 s MPEG-TS segments, a keyframe at the start of every segment) plus a
# master playlist whose BANDWIDTH / AVERAGE-BANDWIDTH / CODECS are computed
# from the real files by scripts/demo_bandwidth.py. The whole directory must
# stay at or below 3,000,000 bytes.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${SCRIPT_DIR}/.." && pwd)"
DEMO_DIR="${REPO_ROOT}/gateway/demo"
VOD_DIR="${DEMO_DIR}/vod"

DURATION=20        # seconds of content
FPS=24
SEG=2              # segment duration in seconds
GOP=$((FPS * SEG)) # frames per segment / keyframe interval
MAX_BYTES=3000000

# name  width  height  video-bitrate  maxrate  bufsize
RENDITIONS=(
  "240p 426 240 120k 130k 130k"
  "360p 640 360 220k 240k 240k"
  "480p 854 480 340k 370k 370k"
)
AUDIO_BITRATE=32k

if ! command -v ffmpeg >/dev/null 2>&1 || ! command -v ffprobe >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "ffmpeg not found; installing it with apt-get" >&2
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y ffmpeg
  else
    echo "error: ffmpeg/ffprobe not found (install the ffmpeg package)" >&2
    exit 1
  fi
fi
if ! command -v python3 >/dev/null 2>&1; then
  echo "error: python3 not found" >&2
  exit 1
fi

rm -rf "${DEMO_DIR}"
mkdir -p "${VOD_DIR}"

# Source: testsrc2 (moving shapes, timestamp + frame counter) rendered at the
# top resolution, with a white progress bar growing along the bottom edge over
# the whole duration, then scaled to each rendition so all renditions show the
# same picture. Audio: 440 Hz sine with a 1760 Hz beep at the start of every
# second. Every invocation uses exactly the same (deterministic) source.
# x264 runs single-threaded because VBV (-maxrate/-bufsize) with frame threads
# is not bit-for-bit reproducible; with one thread re-running the script on the
# same ffmpeg/x264 build yields identical files (no spurious git diffs).
VIDEO_SRC="testsrc2=size=854x480:rate=${FPS}:duration=${DURATION}"
BAR_SRC="color=c=white:size=854x10:rate=${FPS}:duration=${DURATION}"
AUDIO_SRC="sine=frequency=440:beep_factor=4:sample_rate=48000:duration=${DURATION}"

spec_args=()
for r in "${RENDITIONS[@]}"; do
  read -r name width height vbr maxrate bufsize <<<"${r}"
  out="${VOD_DIR}/${name}"
  mkdir -p "${out}"
  cmd=(
    ffmpeg -hide_banner -nostdin -loglevel error -y
    -f lavfi -i "${VIDEO_SRC}"
    -f lavfi -i "${BAR_SRC}"
    -f lavfi -i "${AUDIO_SRC}"
    -filter_complex "[0:v][1:v]overlay=x='-w+W*t/${DURATION}':y=H-h:eval=frame,scale=${width}:${height}:flags=bicubic,setsar=1,format=yuv420p[v]"
    -map "[v]" -map 2:a
    -c:v libx264 -threads:v 1 -profile:v main -level:v 3.0 -preset medium -pix_fmt yuv420p
    -b:v "${vbr}" -maxrate "${maxrate}" -bufsize "${bufsize}"
    -g "${GOP}" -keyint_min "${GOP}" -sc_threshold 0
    -force_key_frames "expr:gte(t,n_forced*${SEG})"
    -c:a aac -profile:a aac_low -b:a "${AUDIO_BITRATE}" -ac 1 -ar 48000
    -map_metadata -1 -fflags +bitexact -flags:v +bitexact -flags:a +bitexact
    -f hls -hls_time "${SEG}" -hls_playlist_type vod -hls_list_size 0
    -hls_segment_type mpegts
    -hls_segment_filename "${out}/seg_%03d.ts"
    "${out}/index.m3u8"
  )
  printf '+'; printf ' %q' "${cmd[@]}"; printf '\n'
  "${cmd[@]}"
  spec_args+=("${name}:${width}x${height}")
done

# Validate the media playlists, check keyframes, compute BANDWIDTH /
# AVERAGE-BANDWIDTH / CODECS from the real files, write master.m3u8 + README.md.
python3 "${SCRIPT_DIR}/demo_bandwidth.py" "${DEMO_DIR}" "${FPS}" "${spec_args[@]}"

# Decode every rendition end to end; any decoder/demuxer message is an error.
for r in "${RENDITIONS[@]}"; do
  read -r name _ <<<"${r}"
  errs="$(ffmpeg -hide_banner -nostdin -v error -i "${VOD_DIR}/${name}/index.m3u8" -f null - 2>&1 || true)"
  if [ -n "${errs}" ]; then
    echo "error: decoding ${name} reported:" >&2
    echo "${errs}" >&2
    exit 1
  fi
done

total="$(du -cb "${DEMO_DIR}" | tail -n1 | cut -f1)"
echo "gateway/demo total: ${total} bytes (limit ${MAX_BYTES})"
if [ "${total}" -gt "${MAX_BYTES}" ]; then
  echo "error: gateway/demo is larger than ${MAX_BYTES} bytes; lower the bitrates" >&2
  exit 1
fi
