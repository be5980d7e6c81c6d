"""HLS and LL-HLS output: CMAF packaging, the segmenter, playlists and the playback routes."""
