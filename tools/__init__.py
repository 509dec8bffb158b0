"""Developer tools: local AWS stand-ins (moto on loopback, a Lambda runtime API), the demo."""
