"""Images by playback id, as `image.mux.com` serves them: thumbnails, animated GIF/WebP and
storyboards (DESIGN.md "HTTP surface").

    params.py     query parameters -> frozen requests; ImageParamError names the field
    geometry.py   fit modes (preserve, stretch, crop, smartcrop, pad) as pure arithmetic
    media.py      the media an image is cut from: the live window or a recording, as a
                  timeline of (init, segment) entries and a reader of their bytes
    render.py     PyAV demux + decode, scale, rotate/flip; Pillow encode (animated WebP:
                  FFmpeg's libwebp_anim); blocking, no shared state
    pool.py       the bounded worker pool: shared decodes, the result cache, the queue bound
                  and the per-client rate limit
    routes.py     the Starlette routes (a thin adapter over the above)
"""
