"""Signed playback (issue 17): the checks a request for a signed playback id goes through.

`tokens` verifies the JSON Web Tokens applications sign with their signing keys (Mux's
claims), `restrictions` holds a token that names a playback restriction to its `Referer` and
`User-Agent` rules, `sessions` makes and checks the short value the playlists put on media
URIs so that a player signs once, and `access` keeps all of it in step with the API.
Everything but `access.PlaybackAccess.load` is sans-IO: the caller passes the time.
"""
