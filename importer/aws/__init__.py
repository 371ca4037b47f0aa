"""What runs in AWS: Lambda entry points, the state machines, the template and the zip."""
