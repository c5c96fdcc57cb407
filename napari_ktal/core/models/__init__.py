"""The networks: 3D ResNet teacher and student, transfer losses, teacher-student distances."""
