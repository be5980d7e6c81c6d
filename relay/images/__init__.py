"""Images by playback id, as `image.mux.com` serves them: thumbnails, animated GIF/WebP and
storyboards (DESIGN.md "HTTP surface").

    params.py     query parameters -> frozen requests; ImageParamError names the field
    geometry.py   fit modes (preserve, stretch, crop, smartcrop, pad) as pure arithmetic
    media.py      the media an image is cut from: the live window or a recording, as a
                  timeline of (init, segment) entries and a reader of their bytes
    render.py     PyAV demux + decode, scale, rotate/flip; Pillow encode (animated WebP:
                  FFmpeg's libwebp_anim); blocking, no shared state; imported by the
                  worker processes only
    jobs.py       the jobs as the relay names them (each runs its namesake in render.py,
                  in a worker) and the `Rendered` image they give back
    worker.py     a worker process and the relay's side of it
    pool.py       the bounded worker pool: shared decodes, the result cache, the queue bound
                  and the per-client rate limit
    routes.py     the Starlette routes (a thin adapter over the above)
"""
