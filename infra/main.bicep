// chaos-lab on Azure Container Apps: everything `azd up` provisions.
// Subscription scope so the resource group itself is part of the deployment (`azd down` removes it).
// One module per concern; see infra/README.md for the map.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; names the resource group (rg-<name>) and seeds unique resource names.')
param environmentName string

@minLength(1)
@description('Azure region for every resource (must offer Azure Managed Redis and Container Apps workload profiles).')
param location string

@secure()
@minLength(16)
@description('Bearer token the service requires on /chaos/run and the other script endpoints (env CHAOS_API_TOKEN). Set it with `azd env set CHAOS_API_TOKEN ...` before `azd up`.')
param chaosApiToken string

@description('Image of the app (azd sets SERVICE_APP_IMAGE_NAME after the first deploy). Empty: a public placeholder until `azd deploy` pushes the real one.')
param appImageName string = ''

@description('Deploy the Container Apps job that runs the load generator (plus its Azure Files share for reports).')
param deployLoadgenJob bool = true

@description('Load profile the job runs (a file name, without .toml, in loadtests/profiles/).')
param loadgenProfile string = 'staged'

@minValue(1)
@maxValue(20)
@description('Replicas of the load generator job; each one runs users/N (`--split N`) and writes its own JSON report.')
param loadgenReplicas int = 1

@description('Multiplier for the profile\'s user counts (`--scale`), as a decimal string.')
param loadgenScale string = '1'

@allowed([
  'Single'
  'Multiple'
])
@description('Revision mode of the container app. Multiple (default) lets the broken-deployment faults keep the previous revision and move traffic back to it on undo; in Single mode that undo is refused by ARM.')
param revisionsMode string = 'Multiple'

@description('Azure Managed Redis SKU (Balanced_B0 is the smallest; enough for the lab).')
param redisSkuName string = 'Balanced_B0'

@allowed([
  'Enabled'
  'Disabled'
])
@description('Redis high availability (replication). Disabled halves the cost of a lab cache.')
param redisHighAvailability string = 'Disabled'

@description('E-mail address notified when an alert fires. Empty: the alert rules fire without notifying anyone.')
param alertEmail string = ''

@description('Also deploy the two alert rules as log alerts on Application Insights, beside the platform metric alerts on the container app (docs/observability.md#alerts).')
param deployLogAlerts bool = false

@minValue(1)
@maxValue(3)
@description('Minimum replicas of the container app (at most its 3 maximum). 2 (default) so that the fleet scenarios (replica-hang) have a replica to break and one to keep serving; 1 halves the cost of an idle lab.')
param minReplicas int = 2

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var appName = 'ca-chaos-${resourceToken}'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
  }
}

module network 'modules/network.bicep' = {
  name: 'network'
  scope: rg
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
  }
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
  }
}

module registry 'modules/registry.bicep' = {
  name: 'registry'
  scope: rg
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
    pullPrincipalId: identity.outputs.principalId
  }
}

module redis 'modules/redis.bicep' = {
  name: 'redis'
  scope: rg
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
    skuName: redisSkuName
    highAvailability: redisHighAvailability
    privateEndpointSubnetId: network.outputs.privateEndpointSubnetId
    privateDnsZoneId: network.outputs.redisPrivateDnsZoneId
    appPrincipalId: identity.outputs.principalId
  }
}

// The fleet's chaos store: storage account, container `chaos`, Storage Blob Data Contributor for the
// app identity on that account.
module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
    appPrincipalId: identity.outputs.principalId
  }
}

// Uses registry, redis and storage outputs, so it starts only after the AcrPull assignment, the
// Redis access policy and the blob data role (all inside those modules) exist.
module containerApps 'modules/containerapps.bicep' = {
  name: 'containerapps'
  scope: rg
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
    appName: appName
    appImageName: appImageName
    revisionsMode: revisionsMode
    infrastructureSubnetId: network.outputs.containerAppsSubnetId
    logAnalyticsWorkspaceName: monitoring.outputs.logAnalyticsWorkspaceName
    applicationInsightsConnectionString: monitoring.outputs.applicationInsightsConnectionString
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    identityPrincipalId: identity.outputs.principalId
    registryLoginServer: registry.outputs.loginServer
    redisHost: redis.outputs.hostName
    redisPort: redis.outputs.port
    nsgName: network.outputs.privateEndpointNsgName
    chaosStoreUrl: storage.outputs.containerUrl
    minReplicas: minReplicas
    chaosApiToken: chaosApiToken
  }
}

module permissions 'modules/permissions.bicep' = {
  name: 'permissions'
  scope: rg
  params: {
    principalId: identity.outputs.principalId
    identityName: identity.outputs.name
    nsgName: network.outputs.privateEndpointNsgName
    appName: containerApps.outputs.appName
    containerAppsEnvironmentName: containerApps.outputs.environmentName
  }
}

// Metric alerts on the container app's platform metrics; log alerts on Application Insights only
// with deployLogAlerts. Uses the app's name output, so it starts once the app exists.
module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
    appName: containerApps.outputs.appName
    applicationInsightsId: monitoring.outputs.applicationInsightsId
    alertEmail: alertEmail
    deployLogAlerts: deployLogAlerts
  }
}

module loadgenJob 'modules/loadgen-job.bicep' = if (deployLoadgenJob) {
  name: 'loadgen-job'
  scope: rg
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
    containerAppsEnvironmentName: containerApps.outputs.environmentName
    image: containerApps.outputs.image
    identityId: identity.outputs.id
    registryLoginServer: registry.outputs.loginServer
    appUrl: containerApps.outputs.appUrl
    profile: loadgenProfile
    replicas: loadgenReplicas
    scale: loadgenScale
  }
}

// Names azd writes to .azure/<env>/.env; the app, the operator CLI and docs/deployment.md read them.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_CONTAINER_REGISTRY_ENDPOINT string = registry.outputs.loginServer
output AZURE_CONTAINER_REGISTRY_NAME string = registry.outputs.name
output AZURE_CONTAINER_APPS_ENVIRONMENT_NAME string = containerApps.outputs.environmentName
output AZURE_NSG_NAME string = network.outputs.privateEndpointNsgName
output SERVICE_APP_NAME string = containerApps.outputs.appName
output SERVICE_APP_URL string = containerApps.outputs.appUrl
output SERVICE_APP_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output AZURE_CLIENT_ID string = identity.outputs.clientId
output REDIS_HOST string = redis.outputs.hostName
output APPLICATIONINSIGHTS_CONNECTION_STRING string = monitoring.outputs.applicationInsightsConnectionString
// The chaos store, for looking at it (`az storage blob list --auth-mode login`; needs a blob data
// role of your own). Not named CHAOS_STORE_URL on purpose: with the azd values exported, a service
// started on your machine would otherwise join the Azure fleet (and its kill-switch latch).
output AZURE_CHAOS_STORE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_CHAOS_STORE_URL string = storage.outputs.containerUrl
output LOADGEN_JOB_NAME string = deployLoadgenJob ? loadgenJob!.outputs.jobName : ''
