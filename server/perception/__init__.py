"""Perception: video and audio in, 58-d coefficients and 78-d audio features out.

Live streams and files share one code path: :mod:`.landmarker` (MediaPipe FaceLandmarker),
:mod:`.pfl` (the pose-aware fixed crop window), :mod:`.coefficients` (landmarker output → 58-d),
:mod:`.video` (decoding and 25 fps resampling), :mod:`.extract` (the whole pipeline, offline and
streaming) and :mod:`.audio` (16 kHz audio → 78-d features).
"""
