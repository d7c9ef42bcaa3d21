// cf-sign on Azure: Container Apps (2+ replicas, a user-assigned managed identity) with
// PostgreSQL Flexible Server as the shared state, the online keys' seeds wrapped by a Key
// Vault RSA key (the identity may only unwrap: "Key Vault Crypto User"), and the trust
// repository published to a Storage container that clients read anonymously (put Azure Front
// Door or a CDN in front of it). docs/deploy.md has every command, from zero.
//
//   az deployment group create -g RG -f deploy/azure/main.bicep \
//     -p image=REGISTRY/cf-sign:TAG dbPassword=... keyVaultName=... \
//        keyMgrWrapped=@key_mgr.wrapped.json pkgMgrWrapped=@pkg_mgr.wrapped.json \
//        pkgMgrMambaWrapped=@pkg_mgr_mamba.wrapped.json

param location string = resourceGroup().location
param image string
@secure()
param dbPassword string
@description('An existing Key Vault with RBAC authorization, holding the RSA wrapping key')
param keyVaultName string
@description('Content of the wrapped: key files made by `cf-sign keys wrap` (ciphertext only)')
param keyMgrWrapped string
param pkgMgrWrapped string
param pkgMgrMambaWrapped string
param dbAdmin string = 'cfsign'
param minReplicas int = 2
param trustContainer string = 'trust'

// Built-in role definitions (their ids are the same in every tenant).
var keyVaultCryptoUser = '12338af0-0e69-4776-bea7-57ae8d297424'
var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'

resource kv 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'cf-sign'
  location: location
}

// unwrapKey on the wrapping key at start-up (and sign for Key Vault EC keys): no key leaves.
resource kvCrypto 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(kv.id, identity.id, keyVaultCryptoUser)
  scope: kv
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultCryptoUser)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource storage 'Microsoft.Storage/storageAccounts@2023-01-01' = {
  name: 'cfsign${uniqueString(resourceGroup().id)}'
  location: location
  sku: { name: 'Standard_ZRS' }
  kind: 'StorageV2'
  properties: {
    allowBlobPublicAccess: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowSharedKeyAccess: false
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-01-01' = {
  parent: storage
  name: 'default'
}

// Anonymous read of blobs (not listing): what conda, mamba and `cf-sign verify` fetch.
resource trust 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-01-01' = {
  parent: blobService
  name: trustContainer
  properties: { publicAccess: 'Blob' }
}

resource blobWrite 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, storageBlobDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource pg 'Microsoft.DBforPostgreSQL/flexibleServers@2023-06-01-preview' = {
  name: 'cf-sign-${uniqueString(resourceGroup().id)}'
  location: location
  sku: { name: 'Standard_B2s', tier: 'Burstable' }
  properties: {
    version: '16'
    administratorLogin: dbAdmin
    administratorLoginPassword: dbPassword
    storage: { storageSizeGB: 32 }
    backup: { backupRetentionDays: 35, geoRedundantBackup: 'Disabled' }
    highAvailability: { mode: 'Disabled' }
  }
}

resource pgDb 'Microsoft.DBforPostgreSQL/flexibleServers/databases@2023-06-01-preview' = {
  parent: pg
  name: 'cfsign'
}

resource pgAzure 'Microsoft.DBforPostgreSQL/flexibleServers/firewallRules@2023-06-01-preview' = {
  parent: pg
  name: 'allow-azure-services'
  properties: { startIpAddress: '0.0.0.0', endIpAddress: '0.0.0.0' }
}

resource logs 'Microsoft.OperationalInsights/workspaces@2022-10-01' = {
  name: 'cf-sign-logs'
  location: location
  properties: { sku: { name: 'PerGB2018' }, retentionInDays: 90 }
}

resource env 'Microsoft.App/managedEnvironments@2023-05-01' = {
  name: 'cf-sign-env'
  location: location
  properties: {
    appLogsConfiguration: {
      destination: 'log-analytics'
      logAnalyticsConfiguration: {
        customerId: logs.properties.customerId
        sharedKey: logs.listKeys().primarySharedKey
      }
    }
  }
}

var dbUrl = 'postgresql+psycopg://${dbAdmin}:${dbPassword}@${pg.properties.fullyQualifiedDomainName}/cfsign?sslmode=require'

resource app 'Microsoft.App/containerApps@2023-05-01' = {
  name: 'cf-sign'
  location: location
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${identity.id}': {} }
  }
  properties: {
    managedEnvironmentId: env.id
    configuration: {
      ingress: { external: true, targetPort: 8000, transport: 'http' }
      secrets: [
        { name: 'db-url', value: dbUrl }
        { name: 'key-mgr-wrapped', value: keyMgrWrapped }
        { name: 'pkg-mgr-wrapped', value: pkgMgrWrapped }
        { name: 'pkg-mgr-mamba-wrapped', value: pkgMgrMambaWrapped }
      ]
    }
    template: {
      containers: [
        {
          name: 'cf-sign'
          image: image
          env: [
            { name: 'CF_SIGN_DB', secretRef: 'db-url' }
            { name: 'CF_SIGN_PUBLISH_DIR', value: '/data/trust' }
            { name: 'CF_SIGN_PUBLISH_TO', value: 'azblob://${storage.name}/${trustContainer}' }
            { name: 'AZURE_CLIENT_ID', value: identity.properties.clientId }
            { name: 'CF_SIGN_WORKERS', value: '2' }
          ]
          resources: { cpu: json('1.0'), memory: '2Gi' }
          volumeMounts: [
            { volumeName: 'keys', mountPath: '/mnt/keys' }
            { volumeName: 'data', mountPath: '/data' }
          ]
          probes: [
            { type: 'Liveness', httpGet: { path: '/healthz', port: 8000 }, periodSeconds: 30 }
            { type: 'Readiness', httpGet: { path: '/healthz', port: 8000 }, periodSeconds: 10 }
          ]
        }
      ]
      volumes: [
        {
          name: 'keys'
          storageType: 'Secret'
          secrets: [
            { secretRef: 'key-mgr-wrapped', path: 'key_mgr.wrapped.json' }
            { secretRef: 'pkg-mgr-wrapped', path: 'pkg_mgr.wrapped.json' }
            { secretRef: 'pkg-mgr-mamba-wrapped', path: 'pkg_mgr_mamba.wrapped.json' }
          ]
        }
        { name: 'data', storageType: 'EmptyDir' }
      ]
      scale: { minReplicas: minReplicas, maxReplicas: 6 }
    }
  }
}

output url string = 'https://${app.properties.configuration.ingress.fqdn}'
output trustUrl string = '${storage.properties.primaryEndpoints.blob}${trustContainer}'
output keyRefs array = [
  'wrapped:/mnt/keys/key_mgr.wrapped.json'
  'wrapped:/mnt/keys/pkg_mgr.wrapped.json'
  'wrapped:/mnt/keys/pkg_mgr_mamba.wrapped.json'
]
