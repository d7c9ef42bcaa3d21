"""Roll-out to conda-forge: keys into many feedstocks' CI, staged enforcement, coverage."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import TYPE_CHECKING

from signer.rollout.http import JsonClient, RateLimiter
from signer.rollout.providers import AzureVariables, GitHubSecrets

if TYPE_CHECKING:
    from signer.rollout.apply import Clients

GITHUB_API = "https://api.github.com"
AZURE_DEVOPS = "https://dev.azure.com"


@dataclass
class Endpoints:
    """Where the roll-out talks to, with what credentials and at what rate."""

    service_url: str
    admin_token: str
    github_api: str = GITHUB_API
    github_token: str = ""
    azure_url: str = AZURE_DEVOPS
    azure_token: str = ""
    rate: float = 10.0  # requests per second per API
    retries: int = 8

    def __post_init__(self) -> None:
        self._limits = {api: RateLimiter(self.rate) for api in ("service", "github", "azure")}

    def service_client(self) -> JsonClient:
        return JsonClient(
            self.service_url,
            {"Authorization": f"Bearer {self.admin_token}"},
            self._limits["service"],
            name="service",
            retries=self.retries,
        )

    def clients(self) -> Clients:
        from signer.rollout.apply import Clients
        from signer.rollout.service import ServiceAdmin

        github = JsonClient(
            self.github_api,
            {
                "Authorization": f"Bearer {self.github_token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
            },
            self._limits["github"],
            name="github",
            retries=self.retries,
        )
        basic = base64.b64encode(f":{self.azure_token}".encode()).decode("ascii")
        azure = JsonClient(
            self.azure_url,
            {"Authorization": f"Basic {basic}"},
            self._limits["azure"],
            name="azure",
            retries=self.retries,
        )
        return Clients(
            ServiceAdmin(self.service_client()), GitHubSecrets(github), AzureVariables(azure)
        )
