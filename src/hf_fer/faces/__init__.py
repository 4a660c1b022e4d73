"""Faces in the wild: an offline RetinaFace detector and checkpoint-faithful alignment.

```python
from hf_fer.faces import RetinaFaceDetector, align_faces, get_face_alignment
detector = RetinaFaceDetector.from_pretrained()          # shipped MIT weights, no download
faces = detector.detect([image])[0]                      # image: uint8 RGB tensor [3, H, W]
crops = align_faces(image, boxes=faces.boxes, landmarks=faces.landmarks,
                    alignment=get_face_alignment(processor))
```
"""
from .alignment import (
    ARCFACE_112_TEMPLATE,
    DEFAULT_ALIGNMENT,
    RAFDB_ALIGNMENT,
    TRAINING_ALIGNMENTS,
    align_faces,
    alignment_transforms,
    box_transforms,
    get_face_alignment,
    scaled_template,
    similarity_transform,
    training_alignment,
    validate_face_alignment,
    warp_affine,
)
from .benchmark import benchmark_detector, cpu_description
from .retinaface import (
    DEFAULT_WEIGHTS,
    FaceDetections,
    FaceDetector,
    RetinaFace,
    RetinaFaceDetector,
    decode_boxes,
    decode_landmarks,
    make_priors,
)

__all__ = [
    "benchmark_detector",
    "cpu_description",
    "ARCFACE_112_TEMPLATE",
    "DEFAULT_ALIGNMENT",
    "RAFDB_ALIGNMENT",
    "TRAINING_ALIGNMENTS",
    "training_alignment",
    "align_faces",
    "alignment_transforms",
    "box_transforms",
    "get_face_alignment",
    "scaled_template",
    "similarity_transform",
    "validate_face_alignment",
    "warp_affine",
    "DEFAULT_WEIGHTS",
    "FaceDetections",
    "FaceDetector",
    "RetinaFace",
    "RetinaFaceDetector",
    "decode_boxes",
    "decode_landmarks",
    "make_priors",
]
