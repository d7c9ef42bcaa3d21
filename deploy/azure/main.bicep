// cf-sign on Azure: Container Apps (2+ replicas) with PostgreSQL Flexible Server as the
// shared state. Replicas serve /trust from the database, so no shared file system is needed:
// put Azure Front Door (or any CDN) in front of https://<app>/trust/ for the public files.
// The online keys come from Key Vault secrets mounted as files (KEYREF file:/mnt/keys/...).
//
//   az deployment group create -g RG -f deploy/azure/main.bicep \
//     -p image=REGISTRY/cf-sign:TAG dbPassword=... keyVaultName=...
// then, once: az containerapp exec -n cf-sign -g RG --command "cf-sign service init ..."

param location string = resourceGroup().location
param image string
@secure()
param dbPassword string
param keyVaultName string
param dbAdmin string = 'cfsign'
param minReplicas int = 2

resource kv 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'cf-sign'
  location: location
}

// The identity reads the key_mgr/pkg_mgr secrets (Key Vault Secrets User).
resource kvRead 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(kv.id, identity.id, 'secrets-user')
  scope: kv
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '4633458b-17de-408a-b874-0445c86b69e6')
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
        { name: 'key-mgr-key', keyVaultUrl: '${kv.properties.vaultUri}secrets/cf-sign-key-mgr', identity: identity.id }
        { name: 'pkg-mgr-key', keyVaultUrl: '${kv.properties.vaultUri}secrets/cf-sign-pkg-mgr', identity: identity.id }
      ]
    }
    template: {
      containers: [
        {
          name: 'cf-sign'
          image: image
          args: [ 'serve', '--host', '0.0.0.0', '--port', '8000', '--workers', '2' ]
          env: [
            { name: 'CF_SIGN_DB', secretRef: 'db-url' }
            { name: 'CF_SIGN_PUBLISH_DIR', value: '/data/trust' }
          ]
          resources: { cpu: json('1.0'), memory: '2Gi' }
          volumeMounts: [ { volumeName: 'keys', mountPath: '/mnt/keys' } ]
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
            { secretRef: 'key-mgr-key', path: 'key_mgr.key' }
            { secretRef: 'pkg-mgr-key', path: 'pkg_mgr.key' }
          ]
        }
      ]
      scale: { minReplicas: minReplicas, maxReplicas: 6 }
    }
  }
}

output url string = 'https://${app.properties.configuration.ingress.fqdn}'
