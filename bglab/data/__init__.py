"""Data sets: ImageFolder trees and CSV manifests (``dataset``), box annotations (``boxdata``)."""
